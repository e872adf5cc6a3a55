"""Rewards: callables with TRL's reward signature, plus a registry of names for recipes.

Importing this package registers the built-in rewards.
"""

from k2rl.rewards import answer as _answer  # noqa: F401  (registers "exact_answer")
from k2rl.rewards.registry import get_reward, register_reward, registered_rewards

__all__ = ["get_reward", "register_reward", "registered_rewards"]
