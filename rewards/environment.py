"""The ``environment`` reward: the score a rollout's environment gave it (``rollout.environment``).

An environment (:mod:`k2rl.rollouts.environment`) may own its reward, computed from the rollout's
own state. The rollout engine writes that score into the row's ``environment_reward`` column before
the recipe's rewards run; this reward hands it over, so it is weighted, logged and evaluated like
any other.
"""

from __future__ import annotations

from k2rl.errors import K2RLError
from k2rl.rewards.registry import register_reward

COLUMN = "environment_reward"


@register_reward("environment")
def environment_reward(prompts, completions, **kwargs) -> list[float | None]:
    """The engine's ``environment_reward`` column (``None`` where the environment gave no score)."""
    if kwargs.get(COLUMN) is None:
        raise K2RLError("reward 'environment' needs rollout.environment naming an environment with a reward "
                        "of its own")
    return [None if s is None else float(s) for s in kwargs[COLUMN]]
