"""The RL algorithm of a run (``trainer.algorithm``), as a small object the one trainer calls.

TRL's variants of GRPO each override one step of a single trainer; k2rl does the same with objects,
so one training step reads top to bottom in :class:`k2rl.trainer.base.K2GRPOTrainer` and an algorithm
is only what differs: :class:`GRPO` is TRL's own loss on group-relative advantages, :class:`K2` the
K1.5/K2 squared loss on the same advantages, and :class:`k2rl.trainer.ppo.PPO` a value head, GAE
advantages and a value loss. :func:`k2rl.trainer.build.algorithm_for` picks one.

An algorithm's hooks, in the order a step calls them:
- ``attach(trainer)``: once, at the end of the trainer's construction;
- ``after_rewards(trainer, rewards_per_func)``: each reward matrix TRL computes (all processes);
- ``scored(trainer, output)``: every scored rollout batch (dynamic sampling's refill batches too),
  before dynamic sampling splices refill groups in;
- ``advantages(trainer, output)``: the step's final batch, once;
- ``policy_loss(trainer, model, inputs)``: each micro-batch's loss.
"""

from __future__ import annotations

import torch

from k2rl.trainer.losses import k2_policy_loss, loss_mask


class GRPO:
    """TRL's clipped surrogate on TRL's group-relative advantages (GSPO with ``importance_sampling_level``)."""

    name = "grpo"

    def attach(self, trainer) -> None:
        """Called once the trainer is built."""

    def after_rewards(self, trainer, rewards_per_func) -> None:
        """The (samples x reward functions) matrix TRL has just computed, all processes."""

    def scored(self, trainer, output: dict) -> dict:
        """A scored rollout batch, before dynamic sampling (refill batches included)."""
        return output

    def advantages(self, trainer, output: dict) -> dict:
        """The step's final rollout batch: the advantages the loss will read."""
        return output

    def policy_loss(self, trainer, model, inputs):
        return trainer.trl_policy_loss(model, inputs)


class K2(GRPO):
    """The K1.5/K2 squared loss (:func:`k2rl.trainer.losses.k2_policy_loss`).

    It needs ``r - mean_r`` per sample, which is exactly TRL's advantage with ``scale_rewards="none"``
    (what :func:`k2rl.trainer.config.grpo_config` sets for ``algorithm: k2``).
    """

    name = "k2"

    def policy_loss(self, trainer, model, inputs):
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        per_token_logps, _, aux_loss = trainer.token_logps(
            model,
            torch.cat([inputs["prompt_ids"], completion_ids], dim=1),
            torch.cat([inputs["prompt_mask"], completion_mask], dim=1),
            completion_ids.size(1),
            compute_aux_loss=trainer.aux_loss_enabled,
        )
        mask = loss_mask(inputs)
        old = inputs.get("old_per_token_logps")
        old = per_token_logps.detach() if old is None else old
        loss = k2_policy_loss(per_token_logps, old, inputs["advantages"], mask, trainer.args.tau)
        trainer.record_metric("k2/loss", loss.item())
        trainer.record_metric("k2/log_ratio", (((per_token_logps - old) * mask).sum(-1)).mean().item())
        loss = loss / trainer.accumulation_scale()
        if trainer.aux_loss_enabled:
            loss = loss + trainer.router_aux_loss_coef * aux_loss / trainer.accumulation_scale()
        return loss

