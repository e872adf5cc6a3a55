"""Rollout backends on one recipe: HF ``generate`` vs k2rl's vLLM engine, synchronous and one step ahead.

Each variant is one whole ``k2rl train`` process of the same recipe and seed (run one after another,
so each wall time is its own); the table is read from each run's ``metrics.jsonl`` and
``summary.json``:

- tokens/s: completion tokens sampled per second of generation (``rollouts/generate_s`` for k2rl's
  engine, ``cost/generation_s`` for TRL's own HF generation), first step excluded;
- step: the mean optimizer step, generation to update (``cost/step_s``), first step excluded (start-up);
- push: the mean weight push into the engine (``vllm/push_s``: write to shared memory + swap + repack);
- gap: the largest |vLLM - policy| log-probability on the engine's own samples (``vllm/logprob_max_abs_diff``);
- delta: held-out accuracy after RL minus before (the run's own baseline).

    OMP_NUM_THREADS=1 python benchmarks/rollout_backends.py                      # quickstart, 10 short RL steps
    python benchmarks/rollout_backends.py --recipe configs/quickstart.yaml -- trainer.max_steps=100

Ratios are against the HF run of the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "hf": ["rollout.backend=transformers"],
    "vllm": ["rollout.backend=vllm"],
    "vllm+ahead": ["rollout.backend=vllm", "rollout.max_staleness=1"],
}


def mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def read_run(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in records if r.get("phase") == "rl"]
    steps = [r for r in rl if "cost/step_s" in r][1:]
    summary = json.loads((run_dir / "summary.json").read_text())
    # the engine's own generation time where it ran (vLLM; one step ahead: the batch's, overlapped), else TRL's
    key = "rollouts/generate_s" if any("rollouts/generate_s" in r for r in rl) else "cost/generation_s"
    generated = [(r[key], r.get("completions/mean_length", 0.0)) for r in rl if key in r][1:]
    gaps = [r["vllm/logprob_max_abs_diff"] for r in rl if "vllm/logprob_max_abs_diff" in r]
    return {
        "generate_s": mean([g for g, _ in generated]),
        "mean_length": mean([length for _, length in generated]),
        "step_s": mean([r["cost/step_s"] for r in steps]),
        "push_s": mean([r["vllm/push_s"] for r in rl if "vllm/push_s" in r]),
        "gap": max([*gaps, (summary.get("vllm") or {}).get("logprob_max_abs_diff") or 0.0]) if "vllm" in summary else None,
        "is_ratio_min": min([r["sampling/importance_sampling_ratio/min"] for r in rl
                             if "sampling/importance_sampling_ratio/min" in r], default=None),
        "delta": summary["delta_pts"],
        "wall_s": summary["wall_s"],
    }


def run_variant(recipe: Path, name: str, seed: int, out: Path, overrides: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "k2rl.cli", "train", str(recipe), f"seed={seed}", f"output_dir={out}",
               f"run_name={name}", "trainer.logging_steps=1", *VARIANTS[name], *overrides]
    with (out / f"{name}.log").open("w") as log:
        code = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = (out / f"{name}.log").read_text().strip().splitlines()[-1:]
        raise SystemExit(f"{name} failed (exit {code}): {tail}")
    return read_run(out / name)


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "configs" / "quickstart.yaml"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temporary directory)")
    parser.add_argument("overrides", nargs="*", help="recipe overrides for every variant (after --)")
    args = parser.parse_args()
    overrides = args.overrides or [  # a short run: what a step costs, not what RL reaches
        "warm_start.max_steps=50", "trainer.max_steps=10", "trainer.eval_steps=0", "data.eval_size=50",
        "eval.max_new_tokens=16",
        # a reward that differs within groups from the first step, so the adapters (and the pushes) move
        "rewards=[{name: exact_answer}, {name: length_penalty, options: {budget: 40, window: 40, unit: chars}}]",
    ]

    from k2rl.config import load_config

    config = load_config(args.recipe, overrides)
    batch = config.trainer.per_device_train_batch_size
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        results = {}
        for name in args.variants:
            results[name] = run_variant(Path(args.recipe), name, args.seed, out, overrides)
            results[name]["tokens_per_s"] = (results[name]["mean_length"] * batch / results[name]["generate_s"]
                                             if results[name]["generate_s"] else None)
            print(f"  {name}: {json.dumps(results[name])}", flush=True)
    print(f"recipe {args.recipe} {' '.join(overrides)}; seed {args.seed}; OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', '1')}; batch {batch} completions per step")
    print("| backend | tokens/s | step s | push s | max log-prob gap | min IS ratio | delta pts | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {fmt(r['tokens_per_s'], '.0f')} | {fmt(r['step_s'], '.2f')} | {fmt(r['push_s'], '.3f')} | "
              f"{fmt(r['gap'], '.1e')} | {fmt(r['is_ratio_min'], '.3f')} | {r['delta']:+.1f} | {r['wall_s']:.0f} |")
    base = results.get("hf")
    if base:
        for name, r in results.items():
            if name != "hf" and r["tokens_per_s"] and base["tokens_per_s"] and r["step_s"] and base["step_s"]:
                print(f"{name} / hf: tokens/s x{r['tokens_per_s'] / base['tokens_per_s']:.2f}, "
                      f"step time x{r['step_s'] / base['step_s']:.2f}")
    if "vllm" in results and "vllm+ahead" in results and results["vllm"]["step_s"]:
        print(f"vllm+ahead / vllm step time: x{results['vllm+ahead']['step_s'] / results['vllm']['step_s']:.2f}")


if __name__ == "__main__":
    main()
