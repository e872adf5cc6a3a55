"""What an RL step costs, by part: generation, rewards (a coding recipe's sandbox), the forwards
without gradient, and the update. Logged with every step under ``cost/``, averaged into the summary.

Where a step's time goes decides what to speed up (a faster sandbox, overlap, a smaller batch), and
the parts mean the same whether TRL generates or k2rl's rollout engine does (``rollout:``):

- ``generation_s`` -- producing a generation batch on the training thread: TRL's generation or the
  engine as its ``rollout_func`` (tokenising, sampling, tool calls, decoding), less the time that thread
  spent scoring or waiting for scores;
- ``rewards_s`` -- the reward functions (sandboxes, the critic's judging) on whichever thread ran them (with
  ``rollout.overlap`` the engine scores on a worker thread while the next chunk generates);
- ``rollout_wall_s`` -- the wall time the step spent generating and scoring. Without overlap it is
  ``generation_s + rewards_s``; with overlap it is less, by what overlap saved;
- ``logprob_s`` -- per-token log-probability forwards without gradient: TRL's old-policy forward when
  the batch outlives an optimizer step, the reference model's when ``beta > 0``, PPO's value pass.
  Kept apart from the update because they grow with the generation batch, not with the optimizer;
- ``update_s`` -- the rest: ``step_s - rollout_wall_s - logprob_s``, i.e. the loss forwards and
  backwards of every micro-batch, the optimizer step, and TRL's bookkeeping between scoring and loss;
- ``step_s`` -- one optimizer step, from its first micro-batch to the optimizer update. Held-out
  evaluation, critic refinement, logging and checkpoints come after that and are not in it.

So ``rollout_wall_s + logprob_s + update_s == step_s`` for every step. TRL generates once per
generation batch, in the step whose micro-batch first needs it: when a batch serves several optimizer
steps (``steps_per_generation`` or ``num_iterations`` above ``gradient_accumulation_steps``) the steps
that reuse it record no generation, rewards or log-prob forwards, and the run's means spread the cost over the steps
it served; several generations in one step (dynamic sampling's refills) add up.

Timers synchronise the accelerator when they stop (nothing to do on CPU), so queued kernels are
charged to the part that queued them. Only training steps are timed: evaluation's generations fall
outside every step. Each process times its own steps; the main process's are the ones logged.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable

import torch
from transformers import TrainerCallback

PREFIX = "cost/"
PARTS = ("generation", "rewards", "logprob", "update")  # the summary's shares of a step, in this order
METRICS = ("generation_s", "rewards_s", "rollout_wall_s", "logprob_s", "update_s", "step_s")


class StepCost(TrainerCallback):
    """Times the parts of each optimizer step; ``record(name, value)`` logs them with the step's metrics
    (``clock``: seconds, monotonic)."""

    def __init__(self, record: Callable[[str, float], None], clock: Callable[[], float] = time.perf_counter):
        self.record, self.clock = record, clock
        self._synchronize = torch.accelerator.synchronize if torch.accelerator.is_available() else (lambda: None)
        self._started: float | None = None  # the clock at the open step's start; None between steps
        self._seconds: dict[str, float] = defaultdict(float)
        self.steps: list[dict[str, float]] = []  # the figures of every step timed

    @contextlib.contextmanager
    def timing(self, part: str):
        """Adds the block's wall time to ``part`` ("generation", "rewards", "logprob") of the open step."""
        if self._started is None:
            yield
            return
        started = self.clock()
        try:
            yield
        finally:
            self._synchronize()
            self._seconds[part] += self.clock() - started

    def scored_inside_generation(self, rewards_s: float, waited_s: float) -> None:
        """A rollout function scored during generation: ``rewards_s`` of reward functions, of which
        ``waited_s`` held up the generating thread (all of it when scoring did not overlap)."""
        if self._started is not None:
            self._seconds["inner_rewards"] += rewards_s
            self._seconds["inner_wait"] += waited_s

    def figures(self, step_s: float) -> dict[str, float]:
        """The open step's ``METRICS`` (seconds), given its wall time."""
        s = self._seconds
        rollout_wall = s["generation"] + s["rewards"]
        return {
            "generation_s": max(0.0, s["generation"] - s["inner_wait"]),
            "rewards_s": s["rewards"] + s["inner_rewards"],
            "rollout_wall_s": rollout_wall,
            "logprob_s": s["logprob"],
            "update_s": max(0.0, step_s - rollout_wall - s["logprob"]),
            "step_s": step_s,
        }

    # ---- TrainerCallback: a step runs from its first micro-batch to the optimizer update ----------

    def on_step_begin(self, args, state, control, **kwargs):
        self._synchronize()
        self._seconds.clear()
        self._started = self.clock()

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self._started is None:
            return
        self._synchronize()
        figures = self.figures(self.clock() - self._started)
        self._started = None
        for name, value in figures.items():
            self.record(PREFIX + name, value)
        self.steps.append(figures)

    def summary(self) -> dict | None:
        """:func:`summarise` of the steps timed."""
        return summarise(self.steps)


def summarise(steps: list[dict[str, float]]) -> dict | None:
    """Mean seconds per step of each metric (``steps``: per-step ``METRICS``), each part's share of the
    step, and what overlap saved.

    The shares add up to 1: the rewards' share is the scoring the step waited for
    (``rollout_wall_s - generation_s``), so with overlap it is smaller than ``rewards_s`` would make it.
    None for no steps.
    """
    if not steps:
        return None
    mean = {name: sum(step[name] for step in steps) / len(steps) for name in METRICS}
    step = mean["step_s"] or float("inf")
    waited_rewards = max(0.0, mean["rollout_wall_s"] - mean["generation_s"])
    share = {"generation": mean["generation_s"], "rewards": waited_rewards,
             "logprob": mean["logprob_s"], "update": mean["update_s"]}
    return {
        "steps": len(steps),
        "seconds": {name.removesuffix("_s"): round(value, 4) for name, value in mean.items()},
        "share": {part: round(value / step, 4) for part, value in share.items()},
        "overlap_saved_s": round(max(0.0, mean["generation_s"] + mean["rewards_s"] - mean["rollout_wall_s"]), 4),
    }


def summary_line(summary: dict) -> str:
    """One line: the mean step, then each part's mean seconds and (in brackets) its share of the step."""
    seconds, share = summary["seconds"], summary["share"]
    parts = " ".join(f"{part} {seconds[part]:.2f}s ({100 * share[part]:.0f}%)" for part in PARTS)
    return f"step cost {seconds['step']:.2f}s: {parts} overlap saved {summary['overlap_saved_s']:.2f}s"
