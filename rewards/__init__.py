"""Rewards: callables with TRL's reward signature, plus a registry of names for recipes.

The built-in rewards register themselves the first time a name is looked up (importing this package
stays cheap, so ``k2rl`` reports a recipe mistake before any heavy library loads); third-party ones
come from the ``k2rl.rewards`` entry-point group when first needed (see :mod:`k2rl.rewards.plugins`),
and any function can be named by import path (:mod:`k2rl.rewards.import_path`).
"""

from k2rl.rewards.composition import build_reward_funcs
from k2rl.rewards.registry import available_rewards, get_reward, register_reward, registered_rewards

__all__ = ["available_rewards", "build_reward_funcs", "get_reward", "register_reward", "registered_rewards"]
