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
        # the pre-RL evaluation's own log (heldout/* and the epoch) is an "eval" record already
        if numeric and not all(k.startswith("heldout/") or k == "epoch" for k in numeric):
            self.log.write(self.phase, state.global_step, **numeric)


def _series(records: list[dict], key: str) -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in records if r.get(key) is not None]


def progress_panels(records: list[dict]) -> list[tuple[str, dict[str, list[tuple[int, float]]]]]:
    """What ``progress.png`` draws: (panel title, {series label: [(step, value), ...]}), one panel per
    reward (each on its own scale), the weighted total, held-out accuracy (step 0 included), failed
    and unscored samples, completion length."""
    rl = [r for r in records if r["phase"] == "rl"]
    evals = [r for r in records if r["phase"] == "eval"]
    rewards = sorted({k[len("rewards/"):-len("/mean")] for r in rl for k in r
                      if k.startswith("rewards/") and k.endswith("/mean")})
    counts = sorted({k for r in rl for k in r if k == "rewards/unscored" or
                     (k.startswith("rewards/") and k.endswith("/failures"))})
    panels = [(f"reward: {name}", {name: _series(rl, f"rewards/{name}/mean")}) for name in rewards]
    panels.append(("reward: weighted total", {"reward": _series(rl, "reward")}))
    panels.append(("held-out accuracy (greedy)", {"accuracy": _series(evals, "accuracy")}))
    panels.append(("failed / unscored samples per logged step", {k.removeprefix("rewards/"): _series(rl, k) for k in counts}))
    panels.append(("completion length (tokens)", {"mean length": _series(rl, "completions/mean_length")}))
    return panels


def plot_progress(records: list[dict], out_png: Path) -> None:
    """``progress.png``: the panels of :func:`progress_panels`, two to a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = progress_panels(records)
    rows = (len(panels) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(11, 3 * rows), squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels):
        for label, points in lines.items():
            if points:
                style = "o-" if title.startswith("held-out") else "-"
                ax.plot([p[0] for p in points], [p[1] for p in points], style, label=label, markersize=3)
        if not any(lines.values()):
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
        elif len(lines) > 1:
            ax.legend(fontsize=8, loc="best")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("RL step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("k2rl: rewards, held-out accuracy, failures, completion length")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def final_line(before: float, after: float, wall_s: float, run_dir: Path, metric: str | None = None) -> str:
    """The last line of a run, fixed in form so runs can be compared by script (``metric``: the reward
    whose solved share the accuracy is, appended last)."""
    delta = 100 * (after - before)
    return (
        f"k2rl: eval accuracy before={before:.3f} after={after:.3f} delta={delta:+.1f}pts "
        f"wall={wall_s:.0f}s run_dir={run_dir}" + (f" metric={metric}" if metric else "")
    )
