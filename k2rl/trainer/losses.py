"""The loss arithmetic of the K2 recipe, as pure tensor functions.

Kept apart from the trainers so each formula can be checked against a hand computation on a few
numbers, without a model. Shapes: ``B`` sequences, ``T`` completion tokens; ``mask`` is 1 on real
completion tokens and 0 on padding.
"""

from __future__ import annotations

import torch


def loss_mask(batch: dict) -> torch.Tensor:
    """1 on the completion tokens a loss trains on: real (not padding) and sampled by the policy now.

    ``tool_mask`` (TRL's name for a ``rollout_func``'s ``env_mask``) is 0 on text the environment
    inserted and, with partial rollouts, on tokens sampled in an earlier iteration.
    """
    mask, sampled = batch["completion_mask"], batch.get("tool_mask")
    return mask if sampled is None else mask * sampled


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is 1 (0 when the mask is empty)."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def k2_policy_loss(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor,
    centered_rewards: torch.Tensor,
    mask: torch.Tensor,
    tau: float,
) -> torch.Tensor:
    """Kimi K1.5 / K2 policy loss: mean over samples of ``(r - mean_r - tau * log(pi/pi_old))^2``.

    ``centered_rewards`` is ``r(x, y_i) - mean_j r(x, y_j)`` per sample (B,); the log ratio is over the
    whole response, so per-token log-probabilities are summed under ``mask``. Averaging over all B
    samples equals ``E_x[(1/K) sum_i ...]`` because every prompt contributes exactly K samples.

    Why this shape: at ``pi = pi_old`` the gradient is ``-2 tau (r - mean_r) grad log pi`` (a policy
    gradient with the group mean as baseline), and the square pulls the log ratio back towards
    ``(r - mean_r) / tau`` instead of clipping it, which is K1.5's off-policy regulariser.
    """
    log_ratio = ((per_token_logps - old_per_token_logps) * mask).sum(dim=-1)
    return ((centered_rewards - tau * log_ratio) ** 2).mean()


def terminal_reward_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over the policy's tokens when the only reward arrives with the last of them.

    ``rewards`` (B,) is the sequence reward, ``values`` (B, T) the value of the state before each token.
    The steps of the chain are the tokens where ``mask`` is 1, in order: tokens the policy did not
    sample (tool answers, earlier iterations' samples) may sit between them, and are part of the
    transition from one step to the next, never a step of their own. The per-step reward is 0 except
    at the last masked token, and the state after it is terminal (value 0). Returns
    ``(advantages, returns)``, both (B, T) and 0 off the mask, with ``returns = advantages + values``.
    """
    # Pack each row's masked tokens to the front (a stable sort keeps their order), run the chain on
    # the packed rows, and put the results back where the tokens were. A mask without gaps packs to itself.
    order = torch.sort((mask == 0).to(torch.int8), dim=-1, stable=True).indices
    advantages, returns = _contiguous_gae(rewards, values.gather(-1, order), mask.gather(-1, order), gamma, lam)
    return torch.zeros_like(advantages).scatter(-1, order, advantages), torch.zeros_like(returns).scatter(-1, order, returns)


def _contiguous_gae(rewards, values, mask, gamma, lam):
    """:func:`terminal_reward_gae` for masks whose 1s all come first in each row."""
    mask = mask.to(values.dtype)
    values = values * mask
    lengths = mask.sum(dim=-1).long()
    token_rewards = torch.zeros_like(values)
    has_tokens = lengths > 0
    rows = torch.arange(values.size(0), device=values.device)[has_tokens]
    token_rewards[rows, lengths[has_tokens] - 1] = rewards[has_tokens].to(values.dtype)

    advantages = torch.zeros_like(values)
    running = torch.zeros(values.size(0), dtype=values.dtype, device=values.device)
    for t in reversed(range(values.size(1))):
        next_value = values[:, t + 1] if t + 1 < values.size(1) else torch.zeros_like(running)
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def whiten(values: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Shift and scale the masked entries to mean 0, std 1 (padding stays 0).

    PPO's advantages are whitened per batch so the step size does not depend on the reward's scale.
    """
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * torch.rsqrt(var + eps) * mask


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> torch.Tensor:
    """PPO's value loss: ``0.5 * max((v - R)^2, (clip(v, v_old +- c) - R)^2)``, averaged over tokens.

    The clip keeps one batch from dragging the value estimate far from the one the advantages were
    computed with; taking the max makes the clip a pessimistic bound, as in the policy surrogate.
    """
    clipped = old_values + (values - old_values).clamp(-cliprange_value, cliprange_value)
    loss = torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * masked_mean(loss, mask)


def lm_loss(per_token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token-mean negative log-likelihood: the PTX loss on a batch of curated text."""
    return -masked_mean(per_token_logps, mask)
