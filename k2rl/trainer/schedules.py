"""Sampling-temperature schedules: explore with a hot sampler early, exploit with a cooler one later.

The schedule is a pure function of the step (:mod:`.temperature`); :class:`TemperatureSchedule` is the TrainerCallback
that applies it before each optimizer step through the trainer's ``set_temperature`` (which keeps
generation and the log-probability computation on the same temperature and logs the value).
"""

from __future__ import annotations

from transformers import TrainerCallback

from k2rl.trainer.temperature import check_temperatures, temperature_at


class TemperatureSchedule(TrainerCallback):
    """Sets the trainer's sampling temperature at the start of every optimizer step."""

    def __init__(self, trainer, start: float, end: float | None, kind: str):
        check_temperatures(start, end, kind)
        self.trainer, self.start, self.end, self.kind = trainer, start, end, kind

    def on_step_begin(self, args, state, control, **kwargs):
        self.trainer.set_temperature(temperature_at(state.global_step, state.max_steps, self.start, self.end, self.kind))
