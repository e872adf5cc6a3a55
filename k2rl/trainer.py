"""The RL trainer: TRL's GRPOTrainer, extended only at its seams.

What k2rl adds here is small on purpose:
- generation folds the expert adapters into the expert tensors once per call
  (:func:`k2rl.expert_lora.merged_expert_adapters`) instead of letting PEFT rebuild every expert's
  delta on every decoding step;
- the recipe's ``trainer`` section maps onto ``GRPOConfig`` in one place.
Loss, advantages, sampling and logging are TRL's.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from trl import GRPOConfig, GRPOTrainer

from k2rl.checkpointing import record_batch
from k2rl.config import TrainerConfig
from k2rl.expert_lora import expert_lora_config, merged_expert_adapters
from k2rl.expert_select import restrict_to_experts
from k2rl.precision import trainer_precision
from k2rl.routing_replay import RoutingReplay


class K2GRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose generation runs with expert adapters merged, plus optional auxiliary losses.

    An auxiliary loss is a callable ``loss(model) -> tensor | None`` with a ``name``; its value is added
    to TRL's policy loss on training steps and logged under that name (critic refinement uses this:
    :mod:`k2rl.critic_refinement`).
    """

    def __init__(self, *args, auxiliary_losses=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.auxiliary_losses = list(auxiliary_losses)

    routing_replay = None  # a k2rl.routing_replay.RoutingReplay when trainer.routing_replay is on

    def record_metric(self, name: str, value: float) -> None:
        """Log ``value`` under ``name`` with this step's training metrics (averaged like TRL's own)."""
        self._metrics["train"][name].append(value)

    def enable_routing_replay(self) -> None:
        """Record router choices during generation; reuse them in every training forward."""
        self.routing_replay = RoutingReplay(self.model)

    def _generate_single_turn(self, *args, **kwargs):
        recording = self.routing_replay.recording() if self.routing_replay else contextlib.nullcontext()
        with merged_expert_adapters(self.accelerator.unwrap_model(self.model)), recording:
            return super()._generate_single_turn(*args, **kwargs)

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        if self.routing_replay is None:
            return super()._get_per_token_logps_and_entropies(*args, **kwargs)
        with self.routing_replay.replaying():
            result = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        mismatch = self.routing_replay.take_mismatch()  # how much replay changed: train/rollout routing gap
        if mismatch is not None:
            self._metrics["train" if self.model.training else "eval"]["routing_replay/mismatch"].append(mismatch)
        return result

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            for auxiliary in self.auxiliary_losses:
                extra = auxiliary(model)
                if extra is not None:
                    loss = loss + extra / self.current_gradient_accumulation_steps
                    self.record_metric(auxiliary.name, extra.item())
        return loss

    def _generate_and_score_completions(self, inputs):
        # TRL's rollout_func receives only prompts; the rollout engine scores with the rows' columns.
        self.rollout_rows = inputs
        # The data position, per step: lets a resumed run be checked against an uninterrupted one.
        if self.model.training:
            record_batch(self.args.output_dir, self.state.global_step + 1, self.accelerator.process_index, inputs)
        return super()._generate_and_score_completions(inputs)


def grpo_args(config: TrainerConfig, reward_weights: list[float], out_dir: Path, seed: int) -> GRPOConfig:
    """GRPOConfig from the recipe's ``trainer`` section."""
    return GRPOConfig(
        output_dir=str(out_dir),
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=max(config.max_steps // 20, 1),
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.beta,
        epsilon=config.epsilon,
        num_iterations=config.num_iterations,
        loss_type=config.loss_type,
        scale_rewards=config.scale_rewards,
        reward_weights=reward_weights,
        max_grad_norm=config.max_grad_norm,
        logging_steps=config.logging_steps,
        save_strategy="steps" if config.save_steps else "no",
        save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit,
        report_to=[],
        seed=seed,
        **trainer_precision(),
        dataloader_num_workers=0,
        log_completions=False,
        disable_tqdm=False,
    )


def build_trainer(
    model, tokenizer, train_dataset, reward_funcs, reward_weights, config: TrainerConfig, out_dir, seed, callbacks=(),
    auxiliary_losses=(), expert_selection=None, rollout_func=None, extra_args=None,
):
    """A ready K2GRPOTrainer with LoRA on the experts (PEFT wraps ``model`` inside TRL).

    ``expert_selection`` (``{layer: [expert, ...]}``, see :mod:`k2rl.routing_profile`) restricts the
    routed-expert adapters to those experts. ``rollout_func`` (a :class:`k2rl.rollouts.engine.RolloutEngine`)
    replaces TRL's generation; ``extra_args`` are further GRPOConfig fields (e.g. ``use_vllm``).
    """
    # The recipe trainers build on K2GRPOTrainer (defined above), hence the import here.
    from k2rl.k2_trainer import K2RecipeTrainer
    from k2rl.ppo import K2PPOTrainer

    trainer_class = K2PPOTrainer if config.algorithm == "ppo" else K2RecipeTrainer
    args = grpo_args(config, reward_weights, Path(out_dir), seed)
    for name, value in (extra_args or {}).items():
        setattr(args, name, value)
    trainer = trainer_class(
        recipe=config,
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=expert_lora_config(config.lora.targets, config.lora.r, config.lora.alpha, router=config.router_trainable),
        callbacks=list(callbacks),
        auxiliary_losses=auxiliary_losses,
        rollout_func=rollout_func,
    )
    if expert_selection is not None:
        restrict_to_experts(trainer.model, expert_selection)
    if config.routing_replay:
        trainer.enable_routing_replay()
    return trainer
