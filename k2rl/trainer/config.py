"""One TRL config object for a run: ``K2GRPOConfig``, TRL's ``GRPOConfig`` plus the K2 recipe's fields.

TRL's convention for a variant is ``XConfig(GRPOConfig)`` validated once in ``__post_init__``; k2rl
follows it. The trainer settings are declared once, in the recipe's ``trainer`` section
(:class:`k2rl.config.TrainerConfig`): K2GRPOConfig's own fields are generated from it (every key
GRPOConfig lacks, same name and default), and :func:`grpo_config` copies the section across field by
field, so a new recipe key reaches the trainers with no list to update. The trainers only read it:
nothing mutates it after construction.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from pathlib import Path

from trl import GRPOConfig

from k2rl.config import BudgetConfig, TrainerConfig
from k2rl.errors import K2RLError
from k2rl.policy.precision import trainer_precision
from k2rl.rollouts.budget import check_budget_config
from k2rl.trainer.optimizers import OPTIMIZERS
from k2rl.trainer.temperature import check_temperatures
from k2rl.trainer.trl_options import COMMON_DEFAULTS, GRPO_OWNED, RECIPE_FIELDS, build_trl_config, trl_fields

ALGORITHMS = ("grpo", "k2", "ppo")  # k2rl.trainer.build.ALGORITHMS maps each to its object

_GRPO_FIELDS = frozenset(f.name for f in dataclasses.fields(GRPOConfig))
# Recipe keys of the trainer section that set a GRPOConfig field of the same name, but not as written:
# the K2 loss wants unscaled rewards; save_steps 0 means no checkpoints; held-out evaluation is k2rl's own.
DERIVED = {"scale_rewards": "trainer.scale_rewards", "save_steps": "trainer.save_steps", "eval_steps": "trainer.eval_steps"}


def _recipe_field(spec: dataclasses.Field, annotation):
    """A K2GRPOConfig field for a trainer-section key GRPOConfig lacks: same name and default; sections
    (budget, sampling, ...) as plain dicts so the arguments stay JSON, as the HF Trainer logs them."""
    if spec.default_factory is not dataclasses.MISSING:
        default = spec.default_factory()
        if dataclasses.is_dataclass(default):
            return spec.name, dict, field(default_factory=lambda: dataclasses.asdict(spec.default_factory()))
        return spec.name, annotation, field(default_factory=spec.default_factory)
    return spec.name, annotation, field(default=spec.default)


# Every key of the recipe's ``trainer`` section (TrainerConfig) is a field of K2GRPOConfig: GRPOConfig's
# own where it has one, else one generated here. ``trl`` is the escape hatch to GRPOConfig's other fields.
_TYPES = typing.get_type_hints(TrainerConfig)


def _check(self) -> None:
    check_temperatures(self.temperature, self.temperature_end, self.temperature_schedule)
    check_budget_config(budget_config(self), self.max_completion_length)
    GRPOConfig.__post_init__(self)
    if self.algorithm not in ALGORITHMS:
        raise K2RLError(f"trainer.algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
    if self.optimizer not in OPTIMIZERS:
        raise K2RLError(f"trainer.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
    if self.algorithm == "k2" and self.scale_rewards != "none":
        # The K2 loss wants r - mean_r per sample: TRL's advantage with unscaled rewards.
        raise K2RLError("trainer.algorithm k2 needs unscaled rewards (scale_rewards: none)")


K2GRPOConfig = dataclasses.make_dataclass(
    "K2GRPOConfig",
    [_recipe_field(f, _TYPES[f.name]) for f in RECIPE_FIELDS if f.name not in _GRPO_FIELDS],
    bases=(GRPOConfig,),
    namespace={"__post_init__": _check, "__module__": __name__,
               "__doc__": "GRPOConfig plus every other key of the recipe's trainer section (TrainerConfig), "
                          "validated once on construction."},
)


def budget_config(args) -> BudgetConfig:
    """The per-task token budgets of a K2GRPOConfig (``column`` None: budget control off)."""
    return BudgetConfig(**args.budget)


def trl_options(recipe: TrainerConfig) -> dict:
    """The recipe's ``trainer.trl`` fields, checked against K2GRPOConfig (see :mod:`.trl_options`)."""
    return trl_fields(K2GRPOConfig, recipe.trl, GRPO_OWNED, "trainer.trl")


def grpo_config(
    recipe: TrainerConfig, reward_weights: list[float], out_dir: Path, seed: int, report_to=(), **extra
) -> K2GRPOConfig:
    """The run's K2GRPOConfig from the recipe's ``trainer`` section (``report_to``: the run's trackers;
    ``extra``: further fields, e.g. vLLM's)."""
    plain = {f.name: getattr(recipe, f.name) for f in RECIPE_FIELDS if f.name not in DERIVED}
    plain = {name: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for name, v in plain.items()}
    defaults = {  # k2rl's choices that ``trainer.trl`` may override
        **COMMON_DEFAULTS,
        "lr_scheduler_type": "constant_with_warmup",
        "warmup_steps": max(recipe.max_steps // 20, 1),
        "log_completions": False,
    }
    return build_trl_config(
        K2GRPOConfig,
        "trainer.trl" if recipe.trl else "trainer",
        output_dir=str(out_dir),
        **plain,
        scale_rewards="none" if recipe.algorithm == "k2" else recipe.scale_rewards,  # the K2 loss wants r - mean r
        reward_weights=reward_weights,
        save_strategy="steps" if recipe.save_steps else "no",
        save_steps=recipe.save_steps or 500,
        report_to=list(report_to),
        seed=seed,
        **trainer_precision(),
        **{**defaults, **trl_options(recipe)},
        **extra,
    )
