"""Any TRL config field from a recipe: ``trainer.trl: {field: value}`` for GRPOConfig and
``warm_start.trl:`` for SFTConfig.

Each key must be a field of the config class and its value must fit the field's annotation. A field
k2rl already sets from a recipe key is refused with the key to use instead, so one setting never has
two spellings; a field k2rl only gives a default (the LR scheduler, say) may be overridden here.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from collections.abc import Mapping

from k2rl.config import TrainerConfig
from k2rl.config.loading import convert_value
from k2rl.errors import K2RLError

# TrainingArguments fields k2rl decides for every TRL config it builds, and the recipe key that decides them.
COMMON_OWNED = {
    "output_dir": "output_dir / run_name (k2rl writes under the run directory)",
    "seed": "seed",
    "report_to": "report_to (run level)",
    "use_cpu": "policy.dtype (precision follows the device)",
    "bf16": "policy.dtype (precision follows the device)",
    "fp16": "policy.dtype (precision follows the device)",
    "gradient_checkpointing": "policy.dtype (precision follows the device)",
    "activation_checkpointing": "policy.dtype (precision follows the device)",
    "resume_from_checkpoint": "k2rl train --resume",
}

# Every key of the recipe's ``trainer`` section but the escape hatch itself: each is a K2GRPOConfig field.
RECIPE_FIELDS = [f for f in dataclasses.fields(TrainerConfig) if f.name != "trl"]

# GRPOConfig fields k2rl sets from recipe keys (``trainer.trl`` may not set them).
GRPO_OWNED = {
    **{f.name: f"trainer.{f.name}" for f in RECIPE_FIELDS},
    "reward_weights": "rewards[].weight", "save_strategy": "trainer.save_steps",
    "use_vllm": "rollout.backend", "vllm_mode": "rollout.vllm_mode",
    "vllm_importance_sampling_correction": "rollout.backend", "vllm_importance_sampling_mode": "rollout.backend",
}
# SFTConfig fields the ``warm_start`` section sets (``warm_start.trl`` may not set them).
SFT_OWNED = {
    "max_steps": "warm_start.max_steps", "learning_rate": "warm_start.learning_rate",
    "per_device_train_batch_size": "warm_start.batch_size", "warmup_steps": "warm_start.warmup_ratio",
    "warmup_ratio": "warm_start.warmup_ratio",
}

# Defaults k2rl chooses for every Trainer config it builds (the ``trl:`` keys may override them):
# data loading in the main process (the datasets are small and in memory), and tqdm progress on.
COMMON_DEFAULTS = {"dataloader_num_workers": 0, "disable_tqdm": False}


def _annotation(tp):
    """TRL and transformers annotate option fields ``SomeEnum | str``: the string must be one of the enum's values."""
    options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else ()
    enums = [o for o in options if isinstance(o, type) and issubclass(o, enum.Enum)]
    if len(enums) == 1 and str in options:
        rest = [o for o in options if o not in (str, enums[0])]
        return typing.Union[enums[0], *rest] if rest else enums[0]
    return tp


def check_not_owned(options: Mapping, owned: Mapping[str, str], section: str) -> None:
    """No field in ``options`` that k2rl sets from a recipe key (checked without TRL's classes, so before
    they import)."""
    owned = {**COMMON_OWNED, **owned}
    for name in options:
        if name in owned:
            raise K2RLError(f"{section}.{name}: k2rl sets {name} itself; use {owned[name]} instead")


def trl_fields(config_class, options: Mapping, owned: Mapping[str, str], section: str) -> dict:
    """``options`` checked against ``config_class``'s fields; returns them with values converted.

    ``owned`` maps fields k2rl sets to the recipe key that sets them; ``section`` is where the options
    came from (e.g. ``trainer.trl``), for the error line.
    """
    fields = {f.name: f for f in dataclasses.fields(config_class) if f.init}
    hints = typing.get_type_hints(config_class)
    check_not_owned(options, owned, section)
    checked = {}
    for name, value in options.items():
        key = f"{section}.{name}"
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise K2RLError(f"{key}: {config_class.__name__} has no field {name!r}{hint}")
        try:
            checked[name] = convert_value(value, _annotation(hints[name]), key)
        except ValueError as exc:
            raise K2RLError(f"{exc} ({config_class.__name__}.{name})") from None
        except TypeError:
            raise K2RLError(f"{key}: {config_class.__name__}.{name} ({hints[name]}) cannot be set from a recipe") from None
    return checked


def build_trl_config(config_class, section: str, **kwargs):
    """``config_class(**kwargs)``; TRL's own validation of the combination is one line naming ``section``."""
    try:
        return config_class(**kwargs)
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise K2RLError(f"{section}: {config_class.__name__} rejects the settings: {first}") from None
