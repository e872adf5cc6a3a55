"""Building the RL trainer for a recipe: reward functions, the one K2GRPOConfig, LoRA, the algorithm.

Everything the recipe's ``trainer`` section decides is decided here, once, before TRL sees it: which
algorithm object the one trainer runs (:func:`algorithm_for`), which reward functions and weights (the budget penalty joins them as a reward),
which auxiliary losses (PTX), and which GRPOConfig fields. The trainers then only read the config.
"""

from __future__ import annotations

from pathlib import Path

from k2rl.config import TrainerConfig
from k2rl.experts.lora import expert_lora_config
from k2rl.experts.selection import restrict_to_experts
from k2rl.rewards import get_reward
from k2rl.rollouts.budget import EXCEEDED_COLUMN
from k2rl.trainer.config import grpo_config
from k2rl.trainer.algorithms import GRPO, K2
from k2rl.trainer.base import K2GRPOTrainer
from k2rl.trainer.ppo import PPO
from k2rl.trainer.ptx import PtxLoss, build_ptx_batches

ALGORITHMS = {"grpo": GRPO, "k2": K2, "ppo": PPO}


def algorithm_for(name: str) -> GRPO:
    """A fresh algorithm object for ``trainer.algorithm`` (the name is validated by K2GRPOConfig)."""
    return ALGORITHMS[name]()


def build_trainer(
    model, tokenizer, train_dataset, reward_funcs, reward_weights, config: TrainerConfig, out_dir, seed, callbacks=(),
    auxiliary_losses=(), expert_selection=None, rollout_func=None, extra_args=None, report_to=(),
):
    """A ready K2GRPOTrainer running ``config.algorithm``, with LoRA on the experts.

    ``expert_selection`` (``{layer: [expert, ...]}``, see :mod:`k2rl.experts.profile`) restricts the
    routed-expert adapters to those experts. ``rollout_func`` (a :class:`k2rl.rollouts.engine.RolloutEngine`)
    replaces TRL's generation; ``extra_args`` are further GRPOConfig fields (e.g. ``use_vllm``).
    """
    reward_funcs, reward_weights = list(reward_funcs), list(reward_weights or [1.0] * len(reward_funcs))
    if config.budget.column is not None:  # TRL's sampling or the rollout engine cuts; this reward prices it
        reward_funcs.append(get_reward(EXCEEDED_COLUMN, penalty=config.budget.penalty))  # logged like any reward
        reward_weights.append(1.0)
    args = grpo_config(config, reward_weights, Path(out_dir), seed, report_to=report_to, **(extra_args or {}))
    ptx = build_ptx_batches(config.ptx, train_dataset, tokenizer, seed)
    if ptx is not None:
        auxiliary_losses = [*auxiliary_losses, PtxLoss(ptx, config.ptx.weight)]
    trainer = K2GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=expert_lora_config(model, config.lora.targets, config.lora.r, config.lora.alpha, router=config.router_trainable),
        callbacks=list(callbacks),
        algorithm=algorithm_for(config.algorithm),
        auxiliary_losses=auxiliary_losses,
        rollout_func=rollout_func,
    )
    if expert_selection is not None:
        restrict_to_experts(trainer.model, expert_selection)
    return trainer
