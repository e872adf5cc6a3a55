"""PPO on the GRPOTrainer machinery (TRL 1.16 has no PPOTrainer any more).

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
- The head is registered as a submodule of the PEFT model, so the trainer's optimizer, gradient
  clipping and device placement take it up like the adapters. It is not part of the saved adapter.

Groups of ``num_generations`` samples per prompt are still drawn (TRL's sampler); PPO just does not
need them for its baseline.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from k2rl.trainer.recipe_trainer import K2RecipeTrainer
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


class K2PPOTrainer(K2RecipeTrainer):
    """PPO: GAE advantages from a value head, TRL's clipped surrogate, a clipped value loss."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        base = self.accelerator.unwrap_model(self.model).get_base_model()
        hidden_size = base.config.get_text_config().hidden_size
        self.value_head = ValueHead(hidden_size).to(self.accelerator.device)
        self.accelerator.unwrap_model(self.model).add_module(VALUE_HEAD_NAME, self.value_head)
        self._sequence_rewards: torch.Tensor | None = None

    @contextmanager
    def _captured_hidden_states(self):
        """Collect the backbone's last hidden states of every forward inside the block, in order."""
        captured: list[torch.Tensor] = []
        backbone = self.accelerator.unwrap_model(self.model).get_base_model().base_model

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

    def after_rewards(self, rewards_per_func, rows):
        super().after_rewards(rewards_per_func, rows)
        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        self._sequence_rewards = (rewards_per_func * weights).nansum(dim=1)

    def after_rollouts(self, inputs, output):
        # This batch's sequence rewards travel with its rows: dynamic sampling (in super()) scores fresh
        # batches, which resets _sequence_rewards, and splices their rows, SEQUENCE_REWARDS included, in.
        local = output["completion_ids"].size(0)
        start = self.accelerator.process_index * local
        output[SEQUENCE_REWARDS] = self._sequence_rewards[start : start + local]
        output = super().after_rollouts(inputs, output)
        if self._refilling:  # a refill batch: its rows are spliced into the batch being built, which gets GAE
            return output
        rewards = output.pop(SEQUENCE_REWARDS)
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        mask = loss_mask(output)
        with torch.no_grad(), self._captured_hidden_states() as captured:
            self.token_logps(
                self.model,
                torch.cat([output["prompt_ids"], completion_ids], dim=1),
                torch.cat([output["prompt_mask"], completion_mask], dim=1),
                completion_ids.size(1),
                batch_size=self.args.per_device_train_batch_size,
            )
            values = self._values(captured, completion_ids.size(1))
        advantages, returns = terminal_reward_gae(rewards, values, mask, self.args.gamma, self.args.gae_lambda)
        output["advantages"] = whiten(advantages, mask)
        output["returns"], output["old_values"] = returns, values
        self.record_metric("ppo/value_mean", ((values * mask).sum() / mask.sum().clamp(min=1)).item())
        return output

    def policy_loss(self, model, inputs):
        with self._captured_hidden_states() as captured:
            loss = super().policy_loss(model, inputs)  # TRL's clipped surrogate on the GAE advantages
        mask = loss_mask(inputs)
        values = self._values(captured, inputs["completion_ids"].size(1))
        value_loss = clipped_value_loss(
            values, inputs["old_values"], inputs["returns"], mask, self.args.cliprange_value
        )
        self.record_metric("ppo/value_loss", value_loss.item())
        return loss + self.args.vf_coef * value_loss / self.accumulation_scale()
