"""The K2 recipe on top of :class:`~k2rl.trainer.K2GRPOTrainer`, through TRL's hooks only.

Four additions, each switched on by the recipe's ``trainer`` section and each an override of one
GRPOTrainer seam:

- ``algorithm: k2`` replaces the clipped surrogate in ``_compute_loss`` with the K1.5/K2 squared loss
  (:func:`k2rl.losses.k2_policy_loss`). It needs ``r - mean_r`` per sample, which is exactly TRL's
  advantage with ``scale_rewards="none"`` (set by :func:`k2rl.trainer.grpo_args`).
- ``ptx`` adds a weighted language-modelling loss on curated data to whatever the RL loss is (as one
  of K2GRPOTrainer's auxiliary losses).
- ``budget`` cuts each sampled response at its task's token budget in ``_generate_single_turn`` and
  hands the over-budget flags to the rewards as a column (see :mod:`k2rl.token_budget`); the
  ``budget_exceeded`` reward, added automatically, turns them into the penalty.
- :meth:`set_temperature` (driven by :class:`k2rl.schedules.TemperatureSchedule`) changes the sampling
  temperature mid-run and logs it as ``temperature``.
"""

from __future__ import annotations

import torch
from trl.trainer.utils import add_fused_lm_head

from k2rl.config import TrainerConfig
from k2rl.errors import K2RLError
from k2rl.losses import k2_policy_loss
from k2rl.ptx import PtxLoss, build_ptx_batches
from k2rl.rewards import get_reward
from k2rl.schedules import TemperatureSchedule, check_temperatures
from k2rl.token_budget import EXCEEDED_COLUMN, check_budget_config, cut_to_budgets, row_budgets
from k2rl.trainer import K2GRPOTrainer


class K2RecipeTrainer(K2GRPOTrainer):
    """K2GRPOTrainer plus the K2 loss, PTX, per-task budgets and a settable sampling temperature."""

    def __init__(self, *args, recipe: TrainerConfig, **kwargs):
        self.recipe = recipe
        model, grpo_config = kwargs["model"], kwargs["args"]
        check_temperatures(recipe.temperature, recipe.temperature_end, recipe.temperature_schedule)
        check_budget_config(recipe.budget, recipe.max_completion_length)
        grpo_config.importance_sampling_level = recipe.importance_sampling_level  # "sequence": GSPO
        if recipe.algorithm == "k2":
            grpo_config.scale_rewards = "none"  # the K2 loss wants r - mean_r, unscaled
        if recipe.budget.column is not None and kwargs.get("rollout_func") is not None:
            raise K2RLError("trainer.budget cuts TRL's own samples; with the rollout engine use its rollout.* limits")
        if recipe.budget.column is not None:  # the penalty is a reward, logged like the others
            kwargs["reward_funcs"] = [*kwargs["reward_funcs"], get_reward(EXCEEDED_COLUMN, penalty=recipe.budget.penalty)]
            weights = grpo_config.reward_weights or [1.0] * (len(kwargs["reward_funcs"]) - 1)
            grpo_config.reward_weights = [*weights, 1.0]
        ptx = build_ptx_batches(recipe.ptx, kwargs["train_dataset"], kwargs["processing_class"], grpo_config.seed)
        if ptx is not None:  # PTX rides on K2GRPOTrainer's auxiliary-loss seam
            kwargs["auxiliary_losses"] = [*kwargs.get("auxiliary_losses", ()), PtxLoss(ptx, recipe.ptx.weight)]
        # TRL patches ``forward`` with a fused LM head that bakes in the temperature; keep what was
        # there before so a new temperature can re-patch from the original instead of stacking wrappers.
        self._forward_before_fused_head = vars(model).get("forward") if hasattr(model, "__dict__") else None
        self._pending_budgets: list[int | None] | None = None
        self._budget_exceeded: list[bool] | None = None
        super().__init__(*args, **kwargs)
        if recipe.temperature_schedule != "constant":
            self.add_callback(
                TemperatureSchedule(self, recipe.temperature, recipe.temperature_end, recipe.temperature_schedule)
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
            base = self.accelerator.unwrap_model(self.model).get_base_model()
            if self._forward_before_fused_head is None:
                del base.forward
            else:
                base.forward = self._forward_before_fused_head
            add_fused_lm_head(
                base, temperature=temperature, cast_lm_head_to_fp32=self.args.cast_lm_head_to_fp32,
                outputs=("log_probs", "entropy"),
            )

    # ---- sampling: the temperature log and per-task budgets ----------------------------------

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["temperature"].append(self.temperature)
        if self.recipe.budget.column is not None:
            self._pending_budgets = row_budgets(inputs, self.recipe.budget)
        return super()._generate_and_score_completions(inputs)

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        completion_ids, logprobs = super()._generate_single_turn(prompt_ids, *args, **kwargs)
        budgets, self._pending_budgets = self._pending_budgets, None  # only the first turn of a rollout
        if budgets is not None and len(budgets) == len(completion_ids):
            completion_ids, logprobs, self._budget_exceeded = cut_to_budgets(
                completion_ids, logprobs, budgets, [*self.eos_token_ids, self._tokenizer.pad_token_id]
            )
            mode = "train" if self.model.training else "eval"
            self._metrics[mode]["budget/exceeded_ratio"].append(sum(self._budget_exceeded) / len(budgets))
        return completion_ids, logprobs

    def _generate(self, prompts):
        result = list(super()._generate(prompts))
        if self._budget_exceeded is not None:
            result[5] = {**result[5], EXCEEDED_COLUMN: self._budget_exceeded}  # extra_fields -> reward kwargs
            self._budget_exceeded = None
        return tuple(result)

    # ---- losses ------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs):
        """The RL loss: TRL's for grpo (and ppo), the K1.5/K2 squared loss for k2."""
        if self.recipe.algorithm != "k2":
            return super()._compute_loss(model, inputs)
        mode = "train" if self.model.training else "eval"
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        per_token_logps, _, aux_loss = self._get_per_token_logps_and_entropies(
            model,
            torch.cat([inputs["prompt_ids"], completion_ids], dim=1),
            torch.cat([inputs["prompt_mask"], completion_mask], dim=1),
            completion_ids.size(1),
            compute_aux_loss=self.aux_loss_enabled,
        )
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        old = inputs.get("old_per_token_logps")
        old = per_token_logps.detach() if old is None else old
        loss = k2_policy_loss(per_token_logps, old, inputs["advantages"], mask, self.recipe.tau)
        self._metrics[mode]["k2/loss"].append(loss.item())
        self._metrics[mode]["k2/log_ratio"].append((((per_token_logps - old) * mask).sum(-1)).mean().item())
        loss = loss / self._accumulation(mode)
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * aux_loss / self._accumulation(mode)
        return loss

    def _accumulation(self, mode: str) -> float:
        """Per-micro-batch losses are scaled down by the accumulation steps (TRL turns HF's scaling off)."""
        return self.current_gradient_accumulation_steps if mode == "train" else 1.0
