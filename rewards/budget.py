"""Length budget: a penalty for completions that run past a token (or character) budget.

Reasoning RL drifts towards ever longer answers; a budget keeps cost per sample bounded without
cutting a good answer off. Within the budget the reward is 0 (no opinion on length); past it the
penalty grows linearly to -1 over ``window`` more units and stays at -1 beyond. Combine it with a
correctness reward by weight in the recipe.
"""

from __future__ import annotations

from k2rl.errors import K2RLError
from k2rl.rewards.answer import completion_text
from k2rl.rewards.registry import register_reward


def overlength_penalty(length: int, budget: int, window: int) -> float:
    """0 up to ``budget``, then linearly down to -1 at ``budget + window`` (a step when window is 0)."""
    over = length - budget
    if over <= 0:
        return 0.0
    if window <= 0:
        return -1.0
    return -min(1.0, over / window)


def completion_lengths(completions, completion_ids, unit: str, reward: str) -> list[int]:
    """Each completion's length in tokens (from ``completion_ids``) or characters, for reward ``reward``."""
    if unit == "tokens":
        if completion_ids is None:
            raise K2RLError(f"reward {reward!r} with unit 'tokens' needs completion_ids (or set unit: chars)")
        return [len(ids) for ids in completion_ids]
    if unit == "chars":
        return [len(completion_text(c)) for c in completions]
    raise K2RLError(f"reward {reward!r}: unit must be 'tokens' or 'chars', got {unit!r}")


@register_reward("length_penalty")
def length_penalty(
    prompts,
    completions,
    completion_ids=None,
    budget: int = 1024,
    window: int | None = None,
    unit: str = "tokens",
    **kwargs,
) -> list[float]:
    """0 within the length budget, down to -1 beyond it (tokens from completion_ids, or characters)."""
    if budget <= 0:
        raise K2RLError(f"reward 'length_penalty': budget must be positive, got {budget}")
    window = budget // 4 if window is None else window
    return [overlength_penalty(n, budget, window) for n in completion_lengths(completions, completion_ids, unit, "length_penalty")]


@register_reward("budget_exceeded")
def budget_exceeded(prompts, completions, budget_exceeded=None, penalty: float = 0.5, **kwargs) -> list[float]:
    """``-penalty`` for each response cut at its task's token budget, else 0 (None: not finished yet).

    Whoever samples does the cutting and marks the rows -- the trainer for TRL's own generation, the
    rollout engine for its rollouts, both from ``trainer.budget`` (:mod:`k2rl.rollouts.budget`); this
    reward only prices the mark, so the penalty shows up in the reward logs like any other reward.
    """
    if budget_exceeded is None:
        raise K2RLError("reward 'budget_exceeded' needs trainer.budget in the recipe (the trainer marks over-budget rows)")
    return [None if over is None else -float(penalty) if over else 0.0 for over in budget_exceeded]
