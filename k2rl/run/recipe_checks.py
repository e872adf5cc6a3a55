"""Checks of a recipe alone -- no data, no model, no torch, transformers or TRL: a mistake in the
recipe's keys is one ``k2rl: error:`` line within a second or two of ``k2rl train``.

``k2rl train`` runs :func:`check_recipe` right after loading the recipe (types, unknown keys and
``extends:`` are :mod:`k2rl.config.loading`'s); :mod:`.preflight` runs it again with the launcher's
process count and adds what needs TRL's classes (field names and types under ``trainer.trl`` /
``warm_start.trl``, TRL's own validation of the combination) or the data (columns, row counts).

The generation batch's arithmetic is TRL's (``GRPOConfig.__post_init__``), restated in
:mod:`k2rl.trainer.shapes` so that it runs here, before TRL imports.
"""

from __future__ import annotations

import os

from k2rl import compat
from k2rl.config import RunConfig
from k2rl.config.sections import check_lora_targets
from k2rl.data.arithmetic import check_task_options
from k2rl.errors import K2RLError
from k2rl.jsonl import data_file
from k2rl.policy.source import resolve_model_source
from k2rl.rewards import get_reward
from k2rl.rollouts.budget import check_budget_config
from k2rl.run.components import check_components
from k2rl.run.eval_rewards import eval_rewards
from k2rl.trainer.shapes import generation_shape
from k2rl.trainer.temperature import check_temperatures
from k2rl.trainer.trl_options import GRPO_OWNED, SFT_OWNED, check_not_owned

# Counts and sizes: the least value a run can work with (None, where a key allows it, means "not set").
AT_LEAST = {
    "data.train_size": 1, "data.eval_size": 1,
    "trainer.logging_steps": 1, "trainer.eval_steps": 0, "trainer.save_steps": 0, "trainer.save_total_limit": 1,
    "trainer.lora.r": 1, "trainer.lora.alpha": 1, "trainer.lora.expert_selection.profile_prompts": 1,
    "trainer.ptx.batch_size": 1, "trainer.ptx.max_length": 1,
    "reward_failures.min_samples": 0, "warm_start.answer_drills": 0,
    "rollout.max_turns": 1, "rollout.max_tool_calls": 0, "rollout.token_budget": 1, "rollout.iteration_budget": 1,
    "rollout.chunks": 1, "rollout.queue_size": 1,
    "critic.pairs_per_group": 1, "critic.max_new_tokens": 1, "critic.batch_size": 1, "critic.refine_max_examples": 1,
}
EVAL_AT_LEAST = {"eval.max_new_tokens": 1, "eval.batch_size": 1, "eval.k": 0}
# Rates and step sizes that must be above zero, and weights and bounds that must not be negative.
POSITIVE = ("trainer.learning_rate", "warm_start.learning_rate", "trainer.epsilon", "rollout.tool_timeout_s")
NON_NEGATIVE = ("trainer.beta", "trainer.tau", "trainer.max_grad_norm", "trainer.vf_coef", "trainer.cliprange_value",
                "trainer.ptx.weight", "critic.refine_weight")
FRACTIONS = ("reward_failures.max_failure_fraction", "trainer.gamma", "trainer.gae_lambda", "warm_start.warmup_ratio",
             "trainer.lora.expert_selection.threshold_p")


def _value(config: RunConfig, key: str):
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _check_ranges(config: RunConfig, at_least: dict[str, int], positive=(), non_negative=(), fractions=()) -> None:
    for key, least in at_least.items():
        if (value := _value(config, key)) is not None and value < least:
            raise K2RLError(f"{key} must be at least {least}, got {value}")
    for key in positive:
        if (value := _value(config, key)) is not None and value <= 0:
            raise K2RLError(f"{key} must be positive, got {value}")
    for key in non_negative:
        if (value := _value(config, key)) < 0:
            raise K2RLError(f"{key} must not be negative, got {value}")
    for key in fractions:
        if (value := _value(config, key)) is not None and not 0 <= value <= 1:
            raise K2RLError(f"{key} must be between 0 and 1, got {value}")


def launched_processes() -> int:
    """Processes the launcher started (``accelerate launch`` and ``torchrun`` set WORLD_SIZE; 1 without
    one): read from the environment, as torch is not loaded yet."""
    value = os.environ.get("WORLD_SIZE", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def check_eval_section(config: RunConfig) -> None:
    """The ``eval`` section's sizes, and every evaluation reward resolves with its options."""
    _check_ranges(config, EVAL_AT_LEAST)
    if config.eval.temperature <= 0:
        raise K2RLError(f"eval.temperature must be positive, got {config.eval.temperature}")
    eval_rewards(config)


def check_rewards(config: RunConfig) -> None:
    """Every reward resolves (a name, a plugin or an import path) and takes the options given; its
    timeout and failure bound are in range."""
    for index, spec in enumerate(config.rewards):
        get_reward(spec.name, **spec.options)
        if spec.timeout_s is not None and spec.timeout_s <= 0:
            raise K2RLError(f"rewards[{index}].timeout_s ({spec.name}) must be positive, got {spec.timeout_s}")
        if spec.max_failure_fraction is not None and not 0 <= spec.max_failure_fraction <= 1:
            raise K2RLError(f"rewards[{index}].max_failure_fraction ({spec.name}) must be between 0 and 1, "
                            f"got {spec.max_failure_fraction}")


def check_recipe(config: RunConfig, num_processes: int | None = None, rows_given: bool = False) -> None:
    """Raise K2RLError for the first mistake the recipe holds on its own (``num_processes``: default
    the launcher's, from the environment; ``rows_given``: the data comes from code, not ``data.source``)."""
    num_processes = num_processes or launched_processes()
    check_components(config)
    if config.policy.model is not None:
        resolve_model_source(config.policy.model)
    if not rows_given:
        check_task_options(config.data.source, config.data.options, config.data.eval_size)
        data_file(config.data.source)
    if config.data.eval_source:
        data_file(config.data.eval_source, "data.eval_source")
    if config.trainer.ptx.weight:
        data_file(config.trainer.ptx.source, "trainer.ptx.source")
    _check_ranges(config, AT_LEAST, POSITIVE, NON_NEGATIVE, FRACTIONS)
    compat.check(config, num_processes)
    trainer = config.trainer
    check_not_owned(trainer.trl, GRPO_OWNED, "trainer.trl")
    check_not_owned(config.warm_start.trl, SFT_OWNED, "warm_start.trl")
    batch_keys = ("generation_batch_size", "steps_per_generation")  # typed later against GRPOConfig
    generation_shape(trainer, num_processes, {k: v for k, v in trainer.trl.items() if k in batch_keys and type(v) is int})
    check_lora_targets(trainer.lora.targets)
    check_temperatures(trainer.temperature, trainer.temperature_end, trainer.temperature_schedule)
    check_budget_config(trainer.budget, trainer.max_completion_length)
    if config.warm_start.enabled:
        for key in ("max_steps", "batch_size"):
            if getattr(config.warm_start, key) < 1:
                raise K2RLError(f"warm_start.{key} must be at least 1, got {getattr(config.warm_start, key)} "
                                "(or warm_start.enabled=false)")
    check_rewards(config)
    check_eval_section(config)
    check_environment(config)


def check_environment(config: RunConfig) -> None:
    """``rollout.environment`` imports and fits the recipe (built later, when the engine is)."""
    rollout = config.rollout
    if rollout.environment is None:
        if rollout.environment_options:
            raise K2RLError("rollout.environment_options without rollout.environment; name the environment")
        return
    from k2rl.rollouts.environment import Environment, environment_class

    if rollout.tools:
        raise K2RLError("rollout.tools and rollout.environment: an environment names its own tools; give one")
    cls = environment_class(rollout.environment)
    if any(spec.name == "environment" for spec in config.rewards) and cls.reward is Environment.reward:
        raise K2RLError(f"rewards: environment, but the environment {rollout.environment} has no reward of its own")
