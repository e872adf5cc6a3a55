"""AdamW vs Muon vs MuonClip on the quickstart: one shared warm start, a learning-rate sweep each, two seeds.

Every run is a ``k2rl train`` of ``configs/quickstart.yaml`` from the same warm-started policy (the
first run's, or ``--warm-start``), with the same data, step budget and held-out evaluation every
``--eval-steps`` RL steps; a row differs in its optimizer and learning rate only. Muon rows set
``trainer.muon_learning_rate`` (AdamW keeps ``trainer.learning_rate`` for the few non-matrix
parameters); MuonClip needs trained attention, so its rows add ``attention`` to ``trainer.lora.targets``
(the row says so) and log the largest attention logit per head (``qk_clip/*`` in ``metrics.jsonl``).

    OMP_NUM_THREADS=1 python benchmarks/optimizers.py [--seeds 0 1] [--max-steps 50] [--eval-steps 10]
        [--adamw 1e-3 2e-3 4e-3] [--muon 2e-3 4e-3 8e-3] [--muonclip 4e-3] [--jobs 2] [--warm-start DIR]
        [--out DIR [--reuse]] [key=value overrides ...]

Prints one table: per optimizer, rate and seed the held-out accuracy at each evaluation, the first
evaluated step reaching ``--target`` ("-": never) and the final accuracy; then per optimizer and rate
the means over seeds, with the ratio of mean final accuracy against AdamW at ``trainer.learning_rate``
of the recipe (the quickstart's rate) measured in the same invocation (or, with ``--reuse``, read back
from an earlier invocation into the same ``--out``: the same runs, not re-run).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampling import steps_to, train  # noqa: E402  (the same single-run helpers as the sampling benchmark)

ATTENTION_TARGETS = "trainer.lora.targets=[routed_experts, shared_experts, attention]"
QUICKSTART_LR = 2e-3  # configs/quickstart.yaml's trainer.learning_rate: the baseline row


def overrides(optimizer: str, lr: float) -> list[str]:
    if optimizer == "adamw":
        return [f"trainer.learning_rate={lr}"]
    extra = [ATTENTION_TARGETS] if optimizer == "muonclip" else []
    return [f"trainer.optimizer={optimizer}", f"trainer.muon_learning_rate={lr}", *extra]


def finished(run_dir: Path) -> dict:
    """A finished row's result, read back from its run directory (the fields ``train`` returns)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((run_dir / "summary.json").read_text())
    curve = sorted((r["step"], r["accuracy"]) for r in records if r["phase"] == "eval")
    return {"curve": curve, "final": summary["accuracy_after"], "wall": summary["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--max-steps", type=int, default=50)
    parser.add_argument("--eval-steps", type=int, default=10)
    parser.add_argument("--target", type=float, default=0.9, help="held-out accuracy to reach")
    parser.add_argument("--adamw", type=float, nargs="*", default=[1e-3, 2e-3, 4e-3], help="AdamW learning rates")
    parser.add_argument("--muon", type=float, nargs="*", default=[2e-3, 4e-3, 8e-3], help="Muon learning rates")
    parser.add_argument("--muonclip", type=float, nargs="*", default=[4e-3], help="MuonClip learning rates")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (after the warm start)")
    parser.add_argument("--warm-start", help="a warm-started policy directory to share (default: the first run's)")
    parser.add_argument("--out", type=Path, help="where the runs go (default: a temporary directory)")
    parser.add_argument("--reuse", action="store_true",
                        help="read rows already finished under --out (an interrupted or extended sweep) instead of re-running them")
    parser.add_argument("extra", nargs="*", help="key.path=value overrides passed to every run")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="k2rl-optimizers-"))
    out.mkdir(parents=True, exist_ok=True)
    common = [f"trainer.max_steps={args.max_steps}", f"trainer.eval_steps={args.eval_steps}", *args.extra]
    if QUICKSTART_LR not in args.adamw:
        args.adamw = [QUICKSTART_LR, *args.adamw]  # every ratio needs its baseline
    rows = [(opt, lr, seed) for seed in args.seeds for opt in ("adamw", "muon", "muonclip") for lr in getattr(args, opt)]
    name = lambda opt, lr, seed: f"{opt}-lr{lr:g}-s{seed}"  # noqa: E731
    results, warm_start = {}, args.warm_start

    def reused(row) -> dict | None:
        run_dir = out / name(*row)
        return finished(run_dir) if args.reuse and (run_dir / "summary.json").exists() else None
    if warm_start is None:  # the first row warm-starts; its warm start is everyone's
        opt, lr, seed = rows[0]
        results[rows[0]] = reused(rows[0]) or train([f"seed={seed}", *common, *overrides(opt, lr)], out, name(*rows[0]))
        warm_start = str(out / name(*rows[0]) / "warm_start")
        print(f"  finished {name(*rows[0])}", flush=True)
    shared = ["policy.preset=null", f"policy.model={warm_start}", "warm_start.enabled=false"]

    def run(row):
        opt, lr, seed = row
        if (result := reused(row)) is not None:
            return row, result
        result = train([f"seed={seed}", *common, *shared, *overrides(opt, lr)], out, name(*row))
        print(f"  finished {name(*row)}", flush=True)
        return row, result

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results.update(pool.map(run, [row for row in rows if row not in results]))

    evals = sorted({step for r in results.values() for step, _ in r["curve"]})
    print(f"\nshared warm start: {warm_start}\nruns: {out}\nheld-out accuracy (greedy) at each evaluated RL step; "
          f"'to {args.target:g}': first evaluated step reaching it")
    print(f"{'optimizer':13} {'lr':>7} {'seed':>4} " + " ".join(f"{s:>5}" for s in evals) + f" {'to ' + format(args.target, 'g'):>7} {'wall':>6}")
    for (opt, lr, seed), r in sorted(results.items()):
        curve = dict(r["curve"])
        reached = steps_to(r["curve"], args.target)
        cells = " ".join(f"{curve[s]:5.3f}" if s in curve else f"{'':>5}" for s in evals)
        print(f"{opt + ('+attn' if opt == 'muonclip' else ''):13} {lr:7.0e} {seed:>4} {cells} "
              f"{reached if reached is not None else '-':>7} {r['wall']:5.0f}s")
    base = [results["adamw", QUICKSTART_LR, s]["final"] for s in args.seeds]
    base_mean = sum(base) / len(base)
    print(f"\n{'optimizer':9} {'lr':>7} {'final':>6} {'x adamw':>8} {'reached':>8} {'mean to':>8}")
    for opt, lr in dict.fromkeys((o, lr) for o, lr, _ in rows):
        runs = [results[opt, lr, s] for s in args.seeds]
        mean = sum(r["final"] for r in runs) / len(runs)
        steps = [steps_to(r["curve"], args.target) for r in runs]
        hit = [s for s in steps if s is not None]
        mean_to = f"{sum(hit) / len(hit):.0f}" if len(hit) == len(steps) else "-"
        print(f"{opt:9} {lr:7.0e} {mean:6.3f} {mean / base_mean if base_mean else float('inf'):8.2f} "
              f"{f'{len(hit)}/{len(runs)}':>8} {mean_to:>8}")
    (out / "optimizers.json").write_text(json.dumps({name(*k): v for k, v in results.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
