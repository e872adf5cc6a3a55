"""Where an RL step's time goes -- generation, rewards (the sandbox), log-prob forwards, the update --
with the rollout engine's scoring overlapped and not, on one recipe.

Each run is one whole ``k2rl train RECIPE rollout.overlap=true|false`` process (``OMP_NUM_THREADS``
set to ``--threads``), run one at a time so each has the machine to itself; ``--repeats`` alternates
them, so drifting load hits both alike. The figures are the runs' ``cost/*`` metrics
(:mod:`k2rl.trainer.step_cost`) from ``metrics.jsonl``, the first ``--skip`` steps of each run left out
(a first step also pays one-off costs: the sandbox starting, first calls). Overlap needs
``rollout.chunks`` > 1 to have anything to overlap; with a recipe whose only engine feature is
``overlap``, ``overlap=false`` means TRL's own generation instead.

    python benchmarks/step_cost.py                                        # configs/coding.yaml, 1 thread
    python benchmarks/step_cost.py --recipe configs/coding.yaml --threads 2 --repeats 2 trainer.max_steps=8

Prints, per setting, each part's mean seconds per step and share of the step (the rewards' share is
the scoring the step waited for, so with overlap it is below what the rewards' seconds alone would
make it), the mean step, what overlap saved, and the ratio overlap on / off of each column.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from k2rl.trainer.step_cost import METRICS, PARTS, PREFIX, summarise  # noqa: E402

SETTINGS = {"overlap off": "rollout.overlap=false", "overlap on": "rollout.overlap=true"}
LABELS = {"generation": "generation", "rewards": "rewards (sandbox)", "logprob": "logprob", "update": "update"}


def run_once(recipe: Path, setting: str, threads: int, out: Path, name: str, overrides: list[str]) -> list[dict]:
    """The per-step cost figures of one ``k2rl train`` process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "k2rl.cli", "train", str(recipe), f"output_dir={out}", f"run_name={name}",
               "trainer.logging_steps=1", SETTINGS[setting], *overrides]
    log = out / f"{name}.log"
    with log.open("w") as handle:
        code = subprocess.run(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise SystemExit(f"step_cost: {setting} run failed (exit {code}), see {log}")
    records = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{m: r[PREFIX + m] for m in METRICS} for r in records if r["phase"] == "rl" and PREFIX + "step_s" in r]


def table(results: dict[str, dict]) -> list[str]:
    width = max(len(label) for label in LABELS.values()) + 2
    lines = [f"{'':{width}}" + "".join(f"{setting:>18}" for setting in results) + f"{'on / off':>12}"]

    def row(label: str, cells: list[str], ratio: float | None) -> None:
        ratio_cell = f"{ratio:>12.2f}" if ratio else f"{'':>12}"
        lines.append(f"{label:{width}}" + "".join(f"{c:>18}" for c in cells) + ratio_cell)

    off, on = results.get("overlap off"), results.get("overlap on")

    def ratio(key: str) -> float | None:
        return on["seconds"][key] / off["seconds"][key] if off and on and off["seconds"][key] else None

    for part in PARTS:
        row(LABELS[part], [f"{r['seconds'][part]:.3f}s {100 * r['share'][part]:4.0f}%" for r in results.values()],
            ratio(part))
    for key, label in (("step", "step"), ("rollout_wall", "rollout wall")):
        row(label, [f"{r['seconds'][key]:.3f}s" for r in results.values()], ratio(key))
    row("overlap saved", [f"{r['overlap_saved_s']:.3f}s" for r in results.values()], None)
    row("steps measured", [str(r["steps"]) for r in results.values()], None)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "configs" / "coding.yaml")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--skip", type=int, default=1, help="first steps of each run left out (one-off costs)")
    parser.add_argument("--out", type=Path, help="where the runs go (default: a temporary directory)")
    parser.add_argument("overrides", nargs="*", help="recipe overrides for both runs, e.g. trainer.max_steps=8")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        steps: dict[str, list[dict]] = {setting: [] for setting in SETTINGS}
        for repeat in range(args.repeats):
            for setting in SETTINGS:
                name = f"{setting.replace(' ', '-')}-{repeat}"
                measured = run_once(args.recipe, setting, args.threads, out, name, args.overrides)[args.skip:]
                steps[setting] += measured
                print(f"  {name}: {len(measured)} steps measured", flush=True)
    results = {setting: summary for setting, found in steps.items() if (summary := summarise(found))}
    if not results:
        raise SystemExit("step_cost: no step left to measure (more steps, or a smaller --skip)")
    print(f"recipe {args.recipe}, OMP_NUM_THREADS={args.threads}, {args.repeats} run(s) per setting, "
          f"first {args.skip} step(s) of each left out; overrides: {' '.join(args.overrides) or 'none'}")
    print("mean seconds per step and share of the step:")
    for line in table(results):
        print(line)


if __name__ == "__main__":
    main()
