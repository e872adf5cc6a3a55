"""Recipe sections for the data side of RL (Kimi K1.5/K2, DAPO): which prompts the trainer samples.

``data.filter`` (pass@k difficulty filtering before RL, :mod:`k2rl.run.difficulty`),
``trainer.sampling`` (prioritized / curriculum prompt sampling, :mod:`k2rl.trainer.sampling`) and
``trainer.dynamic_sampling`` (refilling zero-variance groups, :mod:`k2rl.trainer.dynamic_sampling`).
Bounds are checked here, so a bad value is one line naming the key before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class SamplingConfig:
    """How training prompts are drawn: TRL's shuffled order, by 1 - success rate, or easy to hard.

    ``prioritized`` (K1.5): a prompt's weight is ``max(floor, 1 - s)`` with ``s`` its running success
    rate (exponential average with ``decay`` of its groups' success rates; unseen prompts have s = 0).
    ``curriculum``: prompts sorted by ``difficulty_column`` (low = easy); the pool grows linearly from
    the easiest ``start_fraction`` to all prompts over ``curriculum_steps`` rounds (default: the run).
    A sample counts as a success when the reward ``success_reward`` (default: the recipe's first)
    scores at least ``success_threshold``.
    """

    method: Literal["uniform", "prioritized", "curriculum"] = "uniform"
    floor: float = 0.05
    decay: float = 0.5
    success_reward: str | None = None
    success_threshold: float = 1.0
    difficulty_column: str = "difficulty"
    start_fraction: float = 0.25
    curriculum_steps: int | None = None

    def __post_init__(self):
        if not 0.0 < self.floor <= 1.0:
            raise ValueError(f"trainer.sampling.floor must be in (0, 1], got {self.floor}")
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"trainer.sampling.decay must be in [0, 1), got {self.decay}")
        if not 0.0 < self.start_fraction <= 1.0:
            raise ValueError(f"trainer.sampling.start_fraction must be in (0, 1], got {self.start_fraction}")
        if self.curriculum_steps is not None and self.curriculum_steps < 1:
            raise ValueError(f"trainer.sampling.curriculum_steps must be at least 1, got {self.curriculum_steps}")


@dataclass
class DynamicSamplingConfig:
    """DAPO's dynamic sampling: groups whose rewards are all equal (no GRPO signal) are replaced by
    groups of fresh prompts before the loss, for at most ``max_rounds`` extra generation rounds per step."""

    enabled: bool = False
    max_rounds: int = 2

    def __post_init__(self):
        if self.max_rounds < 1:
            raise ValueError(f"trainer.dynamic_sampling.max_rounds must be at least 1, got {self.max_rounds}")


@dataclass
class DifficultyFilterConfig:
    """K2's difficulty filter: before RL the warm-started policy samples ``pass_k`` answers per training
    prompt; prompts whose pass rate lies outside [``min``, ``max``] (inclusive) are dropped."""

    pass_k: int = 8
    min: float = 0.0
    max: float = 1.0

    def __post_init__(self):
        if self.pass_k < 1:
            raise ValueError(f"data.filter.pass_k must be at least 1, got {self.pass_k}")
        if not 0.0 <= self.min <= self.max <= 1.0:
            raise ValueError(f"data.filter needs 0 <= min <= max <= 1, got min {self.min}, max {self.max}")
