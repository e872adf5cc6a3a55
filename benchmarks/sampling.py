"""The data side of RL on the quickstart: uniform vs filtered vs prioritized vs dynamic sampling, AdamW vs Muon.

Every run starts from one shared warm-started policy (the first run's), with the same data, step
budget and evaluation every ``--eval-steps`` RL steps; a row differs from ``uniform`` (TRL's shuffled
prompts, AdamW) in one recipe key only:

- ``filtered``: ``data.filter`` keeps prompts whose pass rate (``--pass-k`` samples of the warm start)
  lies in [``--filter-min``, ``--filter-max``];
- ``prioritized``: ``trainer.sampling.method=prioritized`` (K1.5: weight 1 - running success);
- ``dynamic``: ``trainer.dynamic_sampling.enabled=true`` (DAPO: zero-variance groups refilled);
- ``muon``: ``trainer.optimizer=muon`` (uniform sampling).

Each run is its own ``k2rl train`` process, one at a time (log: ``OUT/NAME.log``).

    OMP_NUM_THREADS=2 python benchmarks/sampling.py [--seeds 0 1] [--target 0.8]
        [--variants uniform filtered prioritized dynamic muon] [--warm-start DIR] [key=value overrides ...]

Prints per variant and seed: the first RL step whose held-out accuracy (greedy, ``metrics.jsonl``
eval records) reaches ``--target`` ("-" if never), the final accuracy, and both as ratios against the
same seed's ``uniform`` row (steps: < 1 is faster; final: > 1 is better); then the means over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "configs" / "quickstart.yaml"
BASELINE = "uniform"
VARIANTS = {
    "uniform": [],
    "filtered": ["data.filter={{pass_k: {pass_k}, min: {low}, max: {high}}}"],
    "prioritized": ["trainer.sampling.method=prioritized"],
    "dynamic": ["trainer.dynamic_sampling.enabled=true"],
    "muon": ["trainer.optimizer=muon"],
}


def train(overrides: list[str], out: Path, name: str) -> dict:
    """One ``k2rl train`` of the quickstart; its eval curve, final accuracy and wall time."""
    started = time.time()
    command = [sys.executable, "-m", "k2rl.cli", "train", str(RECIPE), f"output_dir={out}", f"run_name={name}", *overrides]
    log = out / f"{name}.log"
    with log.open("w") as handle:
        code = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
    if code != 0:
        raise SystemExit(f"benchmark: run {name} failed (exit {code}); see {log}")
    records = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines() if line.strip()]
    curve = sorted((r["step"], r["accuracy"]) for r in records if r["phase"] == "eval")
    summary = json.loads((out / name / "summary.json").read_text())
    return {"curve": curve, "final": summary["accuracy_after"], "wall": time.time() - started}


def steps_to(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first evaluated RL step whose accuracy reaches ``target`` (0: already before RL)."""
    return next((step for step, accuracy in curve if accuracy >= target), None)


def ratio(value, base) -> str:
    if value is None or base is None:
        return "-"
    return "1.00" if value == base else (f"{value / base:.2f}" if base else "inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--target", type=float, default=0.8, help="held-out accuracy to reach")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--eval-steps", type=int, default=5, help="trainer.eval_steps of every run")
    parser.add_argument("--pass-k", type=int, default=8)
    parser.add_argument("--filter-min", type=float, default=0.1)
    parser.add_argument("--filter-max", type=float, default=0.9)
    parser.add_argument("--warm-start", help="a warm-started policy directory to share (default: the first run's)")
    parser.add_argument("--out", type=Path, help="where the runs go (default: a temporary directory)")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides passed to every run")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="k2rl-sampling-"))
    out.mkdir(parents=True, exist_ok=True)
    variants = [BASELINE, *(v for v in args.variants if v != BASELINE)]  # every ratio needs its seed's baseline
    common = [f"trainer.eval_steps={args.eval_steps}", *args.overrides]
    fill = {"pass_k": args.pass_k, "low": args.filter_min, "high": args.filter_max}
    warm_start, results = args.warm_start, {}
    for seed in args.seeds:
        for variant in variants:
            name = f"{variant}-s{seed}"
            extra = [o.format(**fill) for o in VARIANTS[variant]]
            if warm_start is None:  # the first run warm-starts; its warm start is everyone's
                results[variant, seed] = train([f"seed={seed}", *common, *extra], out, name)
                warm_start = str(out / name / "warm_start")
            else:
                shared = ["policy.preset=null", f"policy.model={warm_start}", "warm_start.enabled=false"]
                results[variant, seed] = train([f"seed={seed}", *common, *shared, *extra], out, name)
            print(f"  finished {name}", flush=True)

    print(f"\nshared warm start: {warm_start}\nruns: {out}\ntarget held-out accuracy {args.target:g}, "
          f"evaluated every {args.eval_steps} steps; ratios against {BASELINE} (AdamW) of the same seed")
    print(f"{'variant':12} {'seed':>4} {'steps':>6} {'x steps':>8} {'final':>6} {'x final':>8} {'wall':>6}")
    for (variant, seed), r in results.items():
        base = results[BASELINE, seed]
        steps, base_steps = steps_to(r["curve"], args.target), steps_to(base["curve"], args.target)
        print(f"{variant:12} {seed:>4} {steps if steps is not None else '-':>6} {ratio(steps, base_steps):>8} "
              f"{r['final']:6.3f} {ratio(r['final'], base['final']):>8} {r['wall']:5.0f}s")
    print(f"{'mean':12} {'':>4} {'reached':>6} {'':>8} {'final':>6} {'x final':>8}")
    base_mean = sum(results[BASELINE, s]["final"] for s in args.seeds) / len(args.seeds)
    for variant in variants:
        rows = [results[variant, s] for s in args.seeds]
        reached = sum(steps_to(r["curve"], args.target) is not None for r in rows)
        mean = sum(r["final"] for r in rows) / len(rows)
        print(f"{variant:12} {'':>4} {f'{reached}/{len(rows)}':>6} {'':>8} {mean:6.3f} {ratio(mean, base_mean):>8}")
    (out / "sampling.json").write_text(json.dumps({f"{v}-s{s}": r for (v, s), r in results.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
