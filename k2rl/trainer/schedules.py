"""Sampling-temperature schedules: explore with a hot sampler early, exploit with a cooler one later.

The schedule is a pure function of the step; :class:`TemperatureSchedule` is the TrainerCallback
that applies it before each optimizer step through the trainer's ``set_temperature`` (which keeps
generation and the log-probability computation on the same temperature and logs the value).
"""

from __future__ import annotations

import math

from transformers import TrainerCallback

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


class TemperatureSchedule(TrainerCallback):
    """Sets the trainer's sampling temperature at the start of every optimizer step."""

    def __init__(self, trainer, start: float, end: float | None, kind: str):
        check_temperatures(start, end, kind)
        self.trainer, self.start, self.end, self.kind = trainer, start, end, kind

    def on_step_begin(self, args, state, control, **kwargs):
        self.trainer.set_temperature(temperature_at(state.global_step, state.max_steps, self.start, self.end, self.kind))
