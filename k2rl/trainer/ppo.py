"""PPO as an algorithm of the one trainer (TRL 1.16 has no PPOTrainer any more): :class:`PPO`.

Design, and why:
- **Value head, not a value model.** A small MLP reads the policy's last hidden state before each
  completion token. A second model would double memory and forward passes; the policy's features
  already encode the prompt. The head reads *detached* features: the value loss trains the head only,
  so the expert adapters are moved by the policy objective alone (no value/policy tug-of-war in a
  shared trunk). Hidden states come from a forward hook on the backbone during the forwards TRL does
  anyway, so the value costs no extra model pass in the loss.
- **GAE over the policy's tokens.** The reward (TRL's weighted reward sum) arrives with the last token
  the policy sampled; :func:`k2rl.trainer.losses.terminal_reward_gae` spreads it back with ``gamma`` and
  ``gae_lambda`` along the sampled tokens only (tool answers and, with partial rollouts, tokens of
  earlier iterations are skipped, not chained through). The token-level advantages are whitened per
  generation batch, after dynamic sampling has put fresh groups in (it decides on TRL's group-relative
  advantages, so GAE comes last).
- **Clipped policy loss is TRL's.** TRL's policy loss already computes the clipped
  surrogate and accepts per-token advantages of shape (B, T); PPO hands it GAE advantages in place of
  group-relative ones. The clipped value loss (:func:`k2rl.trainer.losses.clipped_value_loss`) is added with
  ``vf_coef``.
- The head is registered (``attach``) as a submodule of the PEFT model, so the trainer's optimizer, gradient
  clipping and device placement take it up like the adapters. It is not part of the saved adapter.

Groups of ``num_generations`` samples per prompt are still drawn (TRL's sampler); PPO just does not
need them for its baseline.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from k2rl.trainer.algorithms import GRPO
from k2rl.trainer.losses import clipped_value_loss, loss_mask, terminal_reward_gae, whiten

VALUE_HEAD_NAME = "k2rl_value_head"
SEQUENCE_REWARDS = "k2rl_sequence_rewards"  # a rollout batch's (B,) weighted rewards, until GAE reads them


class ValueHead(nn.Module):
    """Hidden state -> scalar value. The last layer starts at zero, so initial values are 0."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, 1))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden.detach().float()).squeeze(-1)


class PPO(GRPO):
    """PPO: GAE advantages from a value head, TRL's clipped surrogate, a clipped value loss."""

    name = "ppo"

    def __init__(self):
        self.value_head: ValueHead | None = None
        self._sequence_rewards: torch.Tensor | None = None

    def attach(self, trainer) -> None:
        base = trainer.accelerator.unwrap_model(trainer.model).get_base_model()
        hidden_size = base.config.get_text_config().hidden_size
        self.value_head = ValueHead(hidden_size).to(trainer.accelerator.device)
        trainer.accelerator.unwrap_model(trainer.model).add_module(VALUE_HEAD_NAME, self.value_head)

    @contextmanager
    def _captured_hidden_states(self, trainer):
        """Collect the backbone's last hidden states of every forward inside the block, in order."""
        captured: list[torch.Tensor] = []
        backbone = trainer.accelerator.unwrap_model(trainer.model).get_base_model().base_model

        def keep(module, args, output):
            captured.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

        handle = backbone.register_forward_hook(keep)
        try:
            yield captured
        finally:
            handle.remove()

    def _values(self, captured: list[torch.Tensor], completion_length: int) -> torch.Tensor:
        """V(state before each completion token): the hidden state one position before it."""
        hidden = torch.cat(captured, dim=0)
        return self.value_head(hidden[:, -completion_length - 1 : -1])

    def after_rewards(self, trainer, rewards_per_func) -> None:
        """TRL's weighted reward sum per sample (all processes), the reward GAE spreads back."""
        weights = trainer.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        self._sequence_rewards = (rewards_per_func * weights).nansum(dim=1)

    def scored(self, trainer, output):
        # This batch's sequence rewards travel with its rows: dynamic sampling scores fresh batches, which
        # resets _sequence_rewards, and splices their rows, SEQUENCE_REWARDS included, in.
        local = output["completion_ids"].size(0)
        start = trainer.accelerator.process_index * local
        output[SEQUENCE_REWARDS] = self._sequence_rewards[start : start + local]
        return output

    def advantages(self, trainer, output):
        rewards = output.pop(SEQUENCE_REWARDS)
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        mask = loss_mask(output)
        with torch.no_grad(), self._captured_hidden_states(trainer) as captured:
            trainer.token_logps(
                trainer.model,
                torch.cat([output["prompt_ids"], completion_ids], dim=1),
                torch.cat([output["prompt_mask"], completion_mask], dim=1),
                completion_ids.size(1),
                batch_size=trainer.args.per_device_train_batch_size,
            )
            values = self._values(captured, completion_ids.size(1))
        advantages, returns = terminal_reward_gae(rewards, values, mask, trainer.args.gamma, trainer.args.gae_lambda)
        output["advantages"] = whiten(advantages, mask)
        output["returns"], output["old_values"] = returns, values
        trainer.record_metric("ppo/value_mean", ((values * mask).sum() / mask.sum().clamp(min=1)).item())
        return output

    def policy_loss(self, trainer, model, inputs):
        with self._captured_hidden_states(trainer) as captured:
            loss = super().policy_loss(trainer, model, inputs)  # TRL's clipped surrogate on the GAE advantages
        mask = loss_mask(inputs)
        values = self._values(captured, inputs["completion_ids"].size(1))
        value_loss = clipped_value_loss(
            values, inputs["old_values"], inputs["returns"], mask, trainer.args.cliprange_value
        )
        trainer.record_metric("ppo/value_loss", value_loss.item())
        return loss + trainer.args.vf_coef * value_loss / trainer.accumulation_scale()
