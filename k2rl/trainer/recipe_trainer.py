"""The K2 recipe on top of :class:`~k2rl.trainer.base.K2GRPOTrainer`, through the public hooks only.

Each addition is switched on by a field of :class:`~k2rl.trainer.config.K2GRPOConfig`:

- ``algorithm: k2`` replaces the clipped surrogate with the K1.5/K2 squared loss
  (:func:`k2rl.trainer.losses.k2_policy_loss`). It needs ``r - mean_r`` per sample, which is exactly
  TRL's advantage with ``scale_rewards="none"`` (what :func:`k2rl.trainer.config.grpo_config` sets).
- per-task token budgets (``budget_*``) cut each sampled response at its task's budget before it is
  scored and hand the over-budget flags to the rewards as a column (:mod:`k2rl.rollouts.budget`);
  the ``budget_exceeded`` reward (added to the reward functions by :mod:`k2rl.trainer.build`) prices them.
- :meth:`set_temperature` (driven by :class:`k2rl.trainer.schedules.TemperatureSchedule`) changes the
  sampling temperature mid-run and logs it as ``temperature``.

PTX is one of K2GRPOTrainer's auxiliary losses, built by :mod:`k2rl.trainer.build`.
"""

from __future__ import annotations

import torch

from k2rl.errors import K2RLError
from k2rl.rollouts.budget import EXCEEDED_COLUMN, cut_to_budgets, row_budgets
from k2rl.trainer.base import K2GRPOTrainer
from k2rl.trainer.losses import k2_policy_loss, loss_mask
from k2rl.trainer.schedules import TemperatureSchedule


class K2RecipeTrainer(K2GRPOTrainer):
    """K2GRPOTrainer plus the K2 loss, per-task budgets and a settable sampling temperature."""

    def __init__(self, *args, **kwargs):
        model = kwargs["model"]
        # TRL patches ``forward`` with a fused LM head that bakes in the temperature; keep what was
        # there before so a new temperature can re-patch from the original instead of stacking wrappers.
        self._forward_before_fused_head = vars(model).get("forward") if hasattr(model, "__dict__") else None
        self._pending_budgets: list[int | None] | None = None
        self._budget_exceeded: list[bool] | None = None
        super().__init__(*args, **kwargs)
        if self.args.temperature_schedule != "constant":
            self.add_callback(
                TemperatureSchedule(self, self.args.temperature, self.args.temperature_end, self.args.temperature_schedule)
            )

    # ---- temperature -------------------------------------------------------------------------

    def set_temperature(self, temperature: float) -> None:
        """Sample (and score log-probabilities) at ``temperature`` from the next generation on."""
        if temperature != self.temperature:
            self.temperature = temperature
            if self.use_vllm:
                self.vllm_generation.temperature = temperature  # read at every generate call
            else:
                self.generation_config.temperature = temperature
                self.generation_kwargs["temperature"] = temperature
            self.refuse_lm_head(temperature, self._forward_before_fused_head)

    # ---- sampling: the temperature log and per-task budgets ----------------------------------

    def before_rollouts(self, inputs):
        super().before_rollouts(inputs)
        self.record_metric("temperature", self.temperature)
        if self.args.budget_column is not None:
            self._pending_budgets = row_budgets(inputs, self.args.budget)

    def after_sampling(self, completion_ids, logprobs):
        completion_ids, logprobs = super().after_sampling(completion_ids, logprobs)
        budgets, self._pending_budgets = self._pending_budgets, None  # only the first turn of a rollout
        if budgets is not None and len(budgets) != len(completion_ids):
            raise K2RLError(f"trainer.budget: {len(budgets)} per-task budgets for {len(completion_ids)} sampled "
                            "completions; this generation path does not keep one completion per batch row")
        if budgets is not None:
            completion_ids, logprobs, self._budget_exceeded = cut_to_budgets(
                completion_ids, logprobs, budgets, [*self.eos_token_ids, self.processing_class.pad_token_id]
            )
            self.record_metric("budget/exceeded_ratio", sum(self._budget_exceeded) / len(budgets))
        return completion_ids, logprobs

    def reward_columns(self) -> dict:
        columns = super().reward_columns()
        if self._budget_exceeded is not None:
            columns[EXCEEDED_COLUMN], self._budget_exceeded = self._budget_exceeded, None
        return columns

    # ---- losses ------------------------------------------------------------------------------

    def policy_loss(self, model, inputs):
        """The RL loss: TRL's for grpo (and ppo), the K1.5/K2 squared loss for k2."""
        if self.args.algorithm != "k2":
            return super().policy_loss(model, inputs)
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        per_token_logps, _, aux_loss = self.token_logps(
            model,
            torch.cat([inputs["prompt_ids"], completion_ids], dim=1),
            torch.cat([inputs["prompt_mask"], completion_mask], dim=1),
            completion_ids.size(1),
            compute_aux_loss=self.aux_loss_enabled,
        )
        mask = loss_mask(inputs)
        old = inputs.get("old_per_token_logps")
        old = per_token_logps.detach() if old is None else old
        loss = k2_policy_loss(per_token_logps, old, inputs["advantages"], mask, self.args.tau)
        self.record_metric("k2/loss", loss.item())
        self.record_metric("k2/log_ratio", (((per_token_logps - old) * mask).sum(-1)).mean().item())
        loss = loss / self.accumulation_scale()
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * aux_loss / self.accumulation_scale()
        return loss

    def accumulation_scale(self) -> float:
        """Per-micro-batch losses are scaled down by the accumulation steps (TRL turns HF's scaling off)."""
        return self.current_gradient_accumulation_steps if self.model.training else 1.0
