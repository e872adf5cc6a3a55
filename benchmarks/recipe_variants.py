"""Held-out gain of the quickstart's RL variants from one shared warm start: GRPO vs K2 vs PPO vs ESFT.

Every variant starts from the same warm-started policy, with the same seed, data and step budget,
so the only difference between two rows is the RL algorithm (or, for ESFT, which experts adapt).
Each runs as its own ``k2rl train`` process, one at a time.

    OMP_NUM_THREADS=2 python benchmarks/recipe_variants.py [--warm-start RUN_DIR/warm_start]
        [--variants grpo k2 ppo esft] [--esft-p 0.3] [--seed 0] [extra key=value overrides ...]

Without ``--warm-start`` the quickstart's own warm start is run first (its RL phase is the GRPO row).
Prints, per variant, accuracy before/after, the gain, the gain as a share of GRPO's, the share of
routed experts adapted, and wall time.
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
VARIANTS = {
    "grpo": ("configs/quickstart.yaml", []),
    "k2": ("configs/quickstart_k2.yaml", []),
    "ppo": ("configs/quickstart_ppo.yaml", []),
    "esft": ("configs/quickstart.yaml", ["trainer.lora.expert_selection.threshold_p={p}"]),
}


def train(recipe: str, overrides: list[str], out: Path, name: str) -> dict:
    started = time.time()
    command = [sys.executable, "-m", "k2rl.cli", "train", str(ROOT / recipe), f"output_dir={out}", f"run_name={name}", *overrides]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    summary = json.loads((out / name / "summary.json").read_text())
    selection = out / name / "expert_selection.json"
    summary["adapted_share"] = 1.0
    if selection.exists():
        chosen = json.loads(selection.read_text())
        summary["adapted_share"] = chosen["adapted"] / chosen["of"]
    summary["wall"] = time.time() - started
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-start", help="a warm-started policy directory to share (default: run the quickstart's)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--esft-p", type=float, default=0.3, help="ESFT threshold on cumulative relevance")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="where the runs go (default: a temporary directory)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides applied to every variant")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="k2rl-variants-"))
    common = [f"seed={args.seed}", *args.overrides]
    results: dict[str, dict] = {}
    warm_start = args.warm_start
    if warm_start is None:  # the quickstart itself is the GRPO row, and its warm start is shared
        results["grpo"] = train(VARIANTS["grpo"][0], common, out, "grpo")
        warm_start = str(out / "grpo" / "warm_start")
    shared = ["policy.preset=null", f"policy.model={warm_start}", "warm_start.enabled=false"]
    for name in args.variants:
        if name in results:
            continue
        recipe, extra = VARIANTS[name]
        results[name] = train(recipe, [*common, *shared, *(e.format(p=args.esft_p) for e in extra)], out, name)
        print(f"  finished {name}", flush=True)

    base_gain = results["grpo"]["delta_pts"] if "grpo" in results else None
    print(f"\nshared warm start: {warm_start}\nruns: {out}")
    print(f"{'variant':8} {'before':>7} {'after':>7} {'gain':>8} {'vs grpo':>8} {'experts':>8} {'wall':>6}")
    for name, r in results.items():
        ratio = f"{r['delta_pts'] / base_gain:.2f}" if base_gain else "-"
        print(
            f"{name:8} {r['accuracy_before']:7.3f} {r['accuracy_after']:7.3f} {r['delta_pts']:+7.1f}p "
            f"{ratio:>8} {100 * r['adapted_share']:7.1f}% {r['wall']:5.0f}s"
        )


if __name__ == "__main__":
    main()
