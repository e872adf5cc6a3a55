"""k2rl: RL post-training with verifiable rewards for K2-architecture policies, built on TRL.

``k2rl.Trainer``, ``k2rl.train``, ``k2rl.evaluate`` and ``k2rl.load_recipe`` are the Python API
(:mod:`k2rl.api`), loaded on first use so ``import k2rl`` stays cheap.
"""

from k2rl.errors import K2RLError

__version__ = "0.1.0"
__all__ = ["K2RLError", "Trainer", "__version__", "evaluate", "load_recipe", "train"]


def __getattr__(name: str):
    if name in ("Trainer", "train", "evaluate", "load_recipe"):
        from k2rl import api

        return getattr(api, name)
    raise AttributeError(f"module 'k2rl' has no attribute {name!r}")
