"""k2rl: RL post-training with verifiable rewards for K2-architecture policies, built on TRL."""

from k2rl.errors import K2RLError

__version__ = "0.1.0"
__all__ = ["K2RLError", "__version__"]
