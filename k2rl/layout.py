"""The run directory's layout, spelled out once: every file and folder ``k2rl train`` writes, by name.

The phases, the trainer's checkpoints, the difficulty filter, expert profiling and ``k2rl eval`` all
find their paths here, so a renamed file is renamed for every reader at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def _at(*parts: str) -> property:
    """A path of the run directory, ``root / parts``."""
    return property(lambda self: self.root.joinpath(*parts), doc="/".join(parts))


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run directory ``root``."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # the run's record
    config = _at("config.yaml")  # the resolved recipe
    metrics = _at("metrics.jsonl")
    summary_json = _at("summary.json")
    summary_md = _at("summary.md")
    progress_plot = _at("progress.png")
    # models
    initial_policy = _at("initial_policy")  # a preset's freshly built policy
    warm_start = _at("warm_start")  # the warm-started base model, complete
    warm_start_partial = _at("warm_start.partial")  # renamed to warm_start once fully saved
    warm_start_tmp = _at("warm_start_tmp")  # the SFT trainer's output_dir
    adapter = _at("adapter")  # the trained PEFT adapter
    # RL: the trainer's output_dir (checkpoint-N/) and the data order of each step
    checkpoints = _at("rl_tmp")
    data_order = _at("rl_tmp", "data_order.jsonl")
    # phases before RL
    difficulty = _at("difficulty.jsonl")
    difficulty_plot = _at("difficulty.png")
    routing_profile = _at("routing_profile.json")
    routing_profile_plot = _at("routing_profile.png")
    expert_selection = _at("expert_selection.json")
