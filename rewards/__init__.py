"""Rewards: callables with TRL's reward signature, plus a registry of names for recipes.

Importing this package registers the built-in rewards; third-party ones come from the
``k2rl.rewards`` entry-point group when first needed (see :mod:`k2rl.rewards.plugins`).
"""

from k2rl.rewards import answer as _answer  # noqa: F401  (registers "exact_answer")
from k2rl.rewards import budget as _budget  # noqa: F401  (registers "length_penalty")
from k2rl.rewards import environment as _environment  # noqa: F401  (registers "environment")
from k2rl.rewards import format as _format  # noqa: F401  (registers "format")
from k2rl.rewards import length_k15 as _length_k15  # noqa: F401  (registers "k1.5_length")
from k2rl.rewards import math as _math  # noqa: F401  (registers "math")
from k2rl.rewards import reasoning_gym as _reasoning_gym  # noqa: F401  (registers "reasoning_gym")
from k2rl.rewards import rubric as _rubric  # noqa: F401  (registers "rubric")
from k2rl.rewards import unit_tests as _unit_tests  # noqa: F401  (registers "unit_tests")
from k2rl.rewards import verifiers as _verifiers  # noqa: F401  (registers "verifiers"; needs k2rl[verifiers] to run)
from k2rl.rewards.composition import build_reward_funcs
from k2rl.rewards.registry import available_rewards, get_reward, register_reward, registered_rewards

__all__ = ["available_rewards", "build_reward_funcs", "get_reward", "register_reward", "registered_rewards"]
