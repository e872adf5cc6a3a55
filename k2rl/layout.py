"""The run directory's layout, spelled out once: every file and folder ``k2rl train`` writes, by name.

The phases, the trainer's checkpoints, the difficulty filter, expert profiling and ``k2rl eval`` all
find their paths here, so a renamed file is renamed for every reader at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run directory ``root``."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # ---- the run's record
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"  # the resolved recipe

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary_json(self) -> Path:
        return self.root / "summary.json"

    @property
    def summary_md(self) -> Path:
        return self.root / "summary.md"

    @property
    def progress_plot(self) -> Path:
        return self.root / "progress.png"

    @property
    def eval_report(self) -> Path:
        return self.root / "eval.json"  # k2rl eval RUN_DIR

    # ---- models
    @property
    def initial_policy(self) -> Path:
        return self.root / "initial_policy"  # a preset's freshly built policy

    @property
    def warm_start(self) -> Path:
        return self.root / "warm_start"  # the warm-started base model, complete

    @property
    def warm_start_partial(self) -> Path:
        return self.root / "warm_start.partial"  # renamed to warm_start once fully saved

    @property
    def warm_start_tmp(self) -> Path:
        return self.root / "warm_start_tmp"  # the SFT trainer's output_dir

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"  # the trained PEFT adapter

    # ---- RL
    @property
    def checkpoints(self) -> Path:
        return self.root / "rl_tmp"  # the RL trainer's output_dir: checkpoint-N/ and the data order

    @property
    def data_order(self) -> Path:
        return self.checkpoints / "data_order.jsonl"

    # ---- phases before RL
    @property
    def difficulty(self) -> Path:
        return self.root / "difficulty.jsonl"

    @property
    def difficulty_plot(self) -> Path:
        return self.root / "difficulty.png"

    @property
    def routing_profile(self) -> Path:
        return self.root / "routing_profile.json"

    @property
    def routing_profile_plot(self) -> Path:
        return self.root / "routing_profile.png"

    @property
    def expert_selection(self) -> Path:
        return self.root / "expert_selection.json"
