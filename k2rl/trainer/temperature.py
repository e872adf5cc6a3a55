"""The sampling temperature as a pure function of the step, and the check of a recipe's schedule.

Apart from the callback that applies it (:mod:`.schedules`, which needs transformers) so the recipe's
schedule is checked before any heavy import (:mod:`k2rl.run.recipe_checks`).
"""

from __future__ import annotations

import math

from k2rl.errors import K2RLError

KINDS = ("constant", "linear", "cosine")


def temperature_at(step: int, max_steps: int, start: float, end: float | None, kind: str = "constant") -> float:
    """Temperature for optimizer step ``step`` of ``max_steps`` (``start`` at step 0, ``end`` at the last)."""
    if kind not in KINDS:
        raise K2RLError(f"temperature schedule must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "constant" or end is None or max_steps <= 1:
        return start
    progress = min(max(step / (max_steps - 1), 0.0), 1.0)
    if kind == "linear":
        weight = progress
    else:  # cosine: slow to leave the start, slow to arrive at the end
        weight = 0.5 * (1 - math.cos(math.pi * progress))
    return start + (end - start) * weight


def check_temperatures(start: float, end: float | None, kind: str) -> None:
    """Reject schedules that would sample with a non-positive temperature, before any work."""
    if kind not in KINDS:
        raise K2RLError(f"trainer.temperature_schedule must be one of {', '.join(KINDS)}, got {kind!r}")
    for name, value in (("trainer.temperature", start), ("trainer.temperature_end", end)):
        if value is not None and value <= 0:
            raise K2RLError(f"{name} must be positive, got {value}")
    if kind != "constant" and end is None:
        raise K2RLError(f"trainer.temperature_schedule {kind!r} needs trainer.temperature_end")
