"""The run directory: resolved config, metrics.jsonl, a reward/accuracy plot and a summary.

Everything a later reader needs to compare runs lives here; the adapter is saved next to it by the
recipe in PEFT's own format.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml
from transformers import TrainerCallback

from k2rl.config import RunConfig, config_to_dict
from k2rl.distributed import is_main
from k2rl.layout import RunLayout


def make_run_dir(config: RunConfig) -> Path:
    name = config.run_name or time.strftime("%Y%m%d-%H%M%S") + f"-seed{config.seed}"
    run_dir = Path(config.output_dir) / name
    suffix = 1
    while run_dir.exists():  # never overwrite an earlier run
        suffix += 1
        run_dir = Path(config.output_dir) / f"{name}-{suffix}"
    run_dir.mkdir(parents=True)
    RunLayout(run_dir).config.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    return run_dir


class MetricsLog:
    """Append-only JSON lines, flushed per record so a killed run keeps what it measured."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, phase: str, step: int, **values) -> None:
        if not is_main():  # several processes, one log
            return
        record = {"phase": phase, "step": step, "time": round(time.time(), 3), **values}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


class MetricsCallback(TrainerCallback):
    """Sends the trainer's logs (losses, rewards, KL, lengths) to :class:`MetricsLog`."""

    def __init__(self, log: MetricsLog, phase: str):
        self.log, self.phase = log, phase

    def on_log(self, args, state, control, logs=None, **kwargs):
        numeric = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        if numeric:
            self.log.write(self.phase, state.global_step, **numeric)


def plot_progress(records: list[dict], out_png: Path) -> None:
    """Mean reward per logged RL step and held-out accuracy per evaluation, on one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rl = [r for r in records if r["phase"] == "rl" and "reward" in r]
    evals = [r for r in records if r["phase"] == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4))
    if rl:
        ax.plot([r["step"] for r in rl], [r["reward"] for r in rl], label="mean reward (train samples)")
    if evals:
        ax.plot([r["step"] for r in evals], [r["accuracy"] for r in evals], "o-", label="held-out accuracy (greedy)")
    ax.set_xlabel("RL step")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.set_title("k2rl: reward and held-out accuracy")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def final_line(before: float, after: float, wall_s: float, run_dir: Path, metric: str | None = None) -> str:
    """The last line of a run, fixed in form so runs can be compared by script (``metric``: the reward
    whose solved share the accuracy is, appended last)."""
    delta = 100 * (after - before)
    return (
        f"k2rl: eval accuracy before={before:.3f} after={after:.3f} delta={delta:+.1f}pts "
        f"wall={wall_s:.0f}s run_dir={run_dir}" + (f" metric={metric}" if metric else "")
    )
