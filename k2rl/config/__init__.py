"""Typed recipes: YAML files plus dotted command-line overrides, validated into dataclasses.

A recipe is one reproducible run. Every key is declared here with its type and default, so a typo or
a wrong type is caught before any model loads, with one line naming the key and the file.
"""

from k2rl.config.loading import config_to_dict, load_config
from k2rl.config.sections import (
    PolicyConfig,
    DataConfig,
    WarmStartConfig,
    ExpertSelectionConfig,
    LoraConfig,
    BudgetConfig,
    PtxConfig,
    TrainerConfig,
    RewardSpec,
    RewardFailureConfig,
    CriticConfig,
    EvalConfig,
    RolloutConfig,
    RunConfig,
)

__all__ = [
    "config_to_dict",
    "load_config",
    "PolicyConfig",
    "DataConfig",
    "WarmStartConfig",
    "ExpertSelectionConfig",
    "LoraConfig",
    "BudgetConfig",
    "PtxConfig",
    "TrainerConfig",
    "RewardSpec",
    "RewardFailureConfig",
    "CriticConfig",
    "EvalConfig",
    "RolloutConfig",
    "RunConfig",
]
