"""The Kimi K1.5 length reward (arXiv 2501.12599 §2.3.3): within a group, shorter correct answers earn more.

For the samples of one prompt with lengths ``len_i``, ``min_len`` and ``max_len`` the group's extremes::

    lambda_i = 0.5 - (len_i - min_len) / (max_len - min_len)      (0 for all when max_len == min_len)
    reward_i = lambda_i            if sample i is correct
    reward_i = min(0, lambda_i)    if it is not

So the shortest sample gets +0.5 and the longest -0.5; a wrong answer is never paid for being short,
only penalised for being long. Correctness comes from a ``verifier`` reward (score >= 1 is correct,
``exact_answer`` by default). K1.5 switches the reward on after a warm-up, since early on it would
push towards short answers before the policy can solve anything: before ``warmup_steps`` RL steps
(read from TRL's ``trainer_state`` keyword) every sample gets 0. Outside a trainer (no
``trainer_state``, e.g. ``k2rl rewards check``) the reward is on.

Unlike ``length_penalty`` (an absolute budget: 0 within it, down to -1 past it, the same for every
answer), this one is relative to the group and depends on correctness: it has no budget, and it
always spreads the group from +0.5 to -0.5 when lengths differ.
"""

from __future__ import annotations

from k2rl.errors import K2RLError
from k2rl.rewards.answer import TRAINER_KWARGS
from k2rl.rewards.budget import completion_lengths
from k2rl.rewards.registry import register_reward, verifier_outcomes
from k2rl.rewards.rubric.pairs import group_indices

NAME = "k1.5_length"


def length_lambdas(lengths: list[int]) -> list[float]:
    """K1.5's lambda for each sample of one group: 0.5 for the shortest down to -0.5 for the longest."""
    shortest, longest = min(lengths), max(lengths)
    if longest == shortest:
        return [0.0] * len(lengths)
    return [0.5 - (n - shortest) / (longest - shortest) for n in lengths]


def k15_length_rewards(lengths: list[int], correct: list[bool | None]) -> list[float | None]:
    """One group's rewards: lambda for correct samples, min(0, lambda) for wrong ones, None where unverified."""
    return [
        None if ok is None else lam if ok else min(0.0, lam)
        for lam, ok in zip(length_lambdas(lengths), correct, strict=True)
    ]


@register_reward(NAME)
def k15_length(
    prompts,
    completions,
    completion_ids=None,
    warmup_steps: int = 0,
    verifier: str = "exact_answer",
    verifier_options: dict | None = None,
    unit: str = "tokens",
    trainer_state=None,
    **kwargs,
) -> list[float | None]:
    """K1.5's group-relative length reward (see the module docstring); 0 during the first ``warmup_steps``."""
    if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise K2RLError(f"reward {NAME!r}: warmup_steps must be a non-negative integer, got {warmup_steps!r}")
    lengths = completion_lengths(completions, completion_ids, unit, NAME)
    if trainer_state is not None and trainer_state.global_step < warmup_steps:
        return [0.0] * len(completions)
    columns = {k: v for k, v in kwargs.items() if k not in TRAINER_KWARGS}
    correct = verifier_outcomes(verifier, verifier_options, prompts, completions, columns)
    rewards: list[float | None] = [None] * len(completions)
    for group in group_indices(list(prompts)):
        for i, value in zip(group, k15_length_rewards([lengths[i] for i in group], [correct[i] for i in group])):
            rewards[i] = value
    return rewards
