"""The RL trainer: TRL's GRPOTrainer, extended only at its seams (public hooks of :mod:`._trl`).

One class runs every training step; what differs between GRPO, K2 and PPO is a small algorithm object
(:mod:`k2rl.trainer.algorithms`, :mod:`k2rl.trainer.ppo`) chosen in :mod:`k2rl.trainer.build`. What
k2rl adds here is small on purpose:
- generation folds the expert adapters into the expert tensors once per call
  (:func:`k2rl.experts.lora.merged_expert_adapters`) instead of letting PEFT rebuild every expert's
  delta on every decoding step;
- optional auxiliary losses (PTX, critic refinement) added to the policy loss;
- optional routing replay, and a per-step record of the data position for resumed runs;
- prompt sampling (:mod:`k2rl.trainer.sampling`) and dynamic sampling (:mod:`k2rl.trainer.dynamic_sampling`);
- per-task token budgets (``budget_*``): each sampled response is cut at its task's budget before it
  is scored and the over-budget flags go to the rewards as a column (:mod:`k2rl.rollouts.budget`);
  the ``budget_exceeded`` reward (added by :mod:`k2rl.trainer.build`) prices them;
- :meth:`K2GRPOTrainer.set_temperature` (driven by :class:`k2rl.trainer.schedules.TemperatureSchedule`)
  changes the sampling temperature mid-run and logs it as ``temperature``;
- what each step costs, by part (``cost/*``, :mod:`k2rl.trainer.step_cost`);
- ``optimizer: muon`` / ``muonclip`` and ``reset_optimizer_every`` (:mod:`k2rl.trainer.optimizers`),
  through the Trainer's public ``create_optimizer`` and a callback.
Sampling, advantages and logging are otherwise TRL's.
"""

from __future__ import annotations

import contextlib

import torch
from accelerate.utils import gather_object

from k2rl.experts.lora import merged_expert_adapters
from k2rl.experts.replay import RoutingReplay
from k2rl.trainer._trl import TRLSeams
from k2rl.config.rl_data import DynamicSamplingConfig
from k2rl.errors import K2RLError
from k2rl.rollouts.budget import EXCEEDED_COLUMN, cut_to_budgets, row_budgets
from k2rl.trainer.algorithms import GRPO
from k2rl.trainer.checkpointing import record_batch
from k2rl.trainer.config import budget_config
from k2rl.trainer.dynamic_sampling import refill
from k2rl.trainer.optimizers import OptimizerReset, muon_adamw, muon_rate
from k2rl.trainer.qk_clip import QKClip
from k2rl.trainer.sampling import (
    PROMPT_INDEX, SamplerCheckpoint, prompt_sampler, round_successes, sampling_config, with_prompt_index,
)
from k2rl.trainer.schedules import TemperatureSchedule
from k2rl.trainer.step_cost import StepCost


class K2GRPOTrainer(TRLSeams):
    """GRPOTrainer whose generation runs with expert adapters merged, plus optional auxiliary losses.

    An auxiliary loss is a callable ``loss(model) -> tensor | None`` with a ``name``; its value is added
    to TRL's policy loss on training steps and logged under that name (critic refinement uses this:
    :mod:`k2rl.critic.refinement`).
    """

    def __init__(self, *args, algorithm=None, auxiliary_losses=(), **kwargs):
        model = kwargs["model"]
        # TRL patches ``forward`` with a fused LM head that bakes in the temperature; keep what was
        # there before so a new temperature can re-patch from the original instead of stacking wrappers.
        self._forward_before_fused_head = vars(model).get("forward") if hasattr(model, "__dict__") else None
        self._pending_budgets: list[int | None] | None = None
        self._budget_exceeded: list[bool] | None = None
        self.algorithm = algorithm if algorithm is not None else GRPO()
        if sampling_config(kwargs["args"].sampling).method != "uniform":  # rows say which prompt they answer
            kwargs["train_dataset"] = with_prompt_index(kwargs["train_dataset"])
        super().__init__(*args, **kwargs)
        self.auxiliary_losses = list(auxiliary_losses)
        self.routing_replay = RoutingReplay(self.model) if self.args.routing_replay else None
        self._batch_rows: list[dict] = []
        self.sampling = sampling_config(self.args.sampling)
        self.prompts = None  # the PromptSampler, once TRL's dataloader asks for one
        if self.sampling.method != "uniform":
            self.add_callback(SamplerCheckpoint(lambda: self.prompts))
        self.dynamic_sampling = DynamicSamplingConfig(**self.args.dynamic_sampling)
        self._refilling = False
        if self.dynamic_sampling.enabled and (
            self.args.per_device_train_batch_size * self.args.steps_per_generation) % self.num_generations:
            raise K2RLError("trainer.dynamic_sampling needs per_device_train_batch_size x steps_per_generation "
                            "to be a multiple of num_generations (whole groups on each process)")
        if self.args.reset_optimizer_every:
            self.add_callback(OptimizerReset(self.args.reset_optimizer_every))
        self.step_cost = StepCost(self.record_metric)
        self.add_callback(self.step_cost)
        if self.args.temperature_schedule != "constant":
            self.add_callback(
                TemperatureSchedule(self, self.args.temperature, self.args.temperature_end, self.args.temperature_schedule)
            )
        self.algorithm.attach(self)

    def create_optimizer(self, model=None):
        if self.optimizer is None and self.args.optimizer in ("muon", "muonclip"):
            model = self.model if model is None else model
            adamw_cls, adamw_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            muon_lr = self.args.muon_learning_rate or muon_rate(self.args.learning_rate)
            clip = QKClip(model, self.args.qk_clip_tau, self.record_metric).clip if self.args.optimizer == "muonclip" else None
            self.optimizer = muon_adamw(model, self.args.weight_decay, muon_lr, adamw_cls, adamw_kwargs,
                                        set(self.get_decay_parameter_names(model)), after_step=clip,
                                        step_rms=self.args.muon_step_rms)
        return super().create_optimizer(model)

    def prompt_sampler(self, default):
        if self.sampling.method == "uniform":
            return default
        if self.prompts is None:  # one sampler per run: its state outlives dataloaders
            self.prompts = prompt_sampler(default, self.train_dataset, self.sampling, self.args.max_steps)
        return self.prompts

    def after_rewards(self, rewards_per_func, rows) -> None:
        super().after_rewards(rewards_per_func, rows)
        if self.prompts is not None and self.model.training and not self._refilling:
            prompts = gather_object([row[PROMPT_INDEX] for row in rows])  # the reward matrix's rows, all processes
            self.prompts.observe(round_successes(rewards_per_func, list(self.reward_func_names), self.sampling), prompts)
        self.algorithm.after_rewards(self, rewards_per_func)

    def batch_rows(self) -> list[dict]:
        """The dataset rows of the generation batch being rolled out (the rollout engine scores with them)."""
        return self._batch_rows

    def sampling_context(self):
        recording = self.routing_replay.recording() if self.routing_replay else contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(merged_expert_adapters(self.accelerator.unwrap_model(self.model)))
        stack.enter_context(recording)
        return stack

    def generation_context(self):
        return self.step_cost.timing("generation")

    def rewards_context(self):
        return self.step_cost.timing("rewards")

    def scored_during_generation(self, rewards_s: float, waited_s: float) -> None:
        """For a ``rollout_func`` that scores the batch itself (the rollout engine): ``rewards_s`` seconds of
        reward functions inside the generation call, of which ``waited_s`` held generation up."""
        self.step_cost.scored_inside_generation(rewards_s, waited_s)

    def scoring_forward_context(self):
        stack = contextlib.ExitStack()
        if not torch.is_grad_enabled():  # the fresh batch's old-policy, reference or value forwards, not the loss
            stack.enter_context(self.step_cost.timing("logprob"))
        if self.routing_replay:
            stack.enter_context(self.routing_replay.replaying())
        return stack

    def after_scoring_forward(self) -> None:
        if self.routing_replay is not None:
            mismatch = self.routing_replay.take_mismatch()  # how much replay changed: train/rollout routing gap
            if mismatch is not None:
                self.record_metric("routing_replay/mismatch", mismatch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            for auxiliary in self.auxiliary_losses:
                extra = auxiliary(model)
                if extra is not None:
                    loss = loss + extra / self.current_gradient_accumulation_steps
                    self.record_metric(auxiliary.name, extra.item())
        return loss

    def before_rollouts(self, inputs):
        super().before_rollouts(inputs)
        self._batch_rows = inputs
        # The data position, per step: lets a resumed run be checked against an uninterrupted one.
        if self.model.training and not self._refilling:
            record_batch(self.args.output_dir, self.state.global_step + 1, self.accelerator.process_index, inputs)
        self.record_metric("temperature", self.temperature)
        if self.args.budget["column"] is not None:
            self._pending_budgets = row_budgets(inputs, budget_config(self.args))

    def after_rollouts(self, inputs, output):
        output = self.algorithm.scored(self, super().after_rollouts(inputs, output))
        if self._refilling:  # a refill batch: its groups are spliced into the step's batch, which goes on below
            return output
        if self.dynamic_sampling.enabled and self.model.training:
            output = refill(self, output, self.dynamic_sampling.max_rounds)
        return self.algorithm.advantages(self, output)

    def refill_rollouts(self, inputs: list[dict]) -> dict:
        """TRL's rollout step for fresh prompts of the current step (dynamic sampling's refill rounds)."""
        self._refilling = True
        try:
            return self.score_rollouts(inputs)
        finally:
            self._refilling = False

    # ---- temperature and per-task budgets ------------------------------------------------------

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

    # ---- losses --------------------------------------------------------------------------------

    def policy_loss(self, model, inputs):
        """The RL loss of one micro-batch: the algorithm's (TRL's own for grpo)."""
        return self.algorithm.policy_loss(self, model, inputs)

    def accumulation_scale(self) -> float:
        """Per-micro-batch losses are scaled down by the accumulation steps (TRL turns HF's scaling off)."""
        return self.current_gradient_accumulation_steps if self.model.training else 1.0
