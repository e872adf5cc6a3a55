"""Checks of a recipe against its data, run before any model is built: a shape or a column that would
fail an hour into the run fails now, as one ``k2rl: error:`` line.

What the data loader checks itself (a file that is missing, empty or not JSON line by line, too few
rows to hold out an eval set, a mapped column that is absent) fails in :mod:`k2rl.data.sources`; this
module adds what needs the recipe and the data together. The README's "Fail fast" table lists both.
"""

from __future__ import annotations

from datasets import Dataset

from k2rl import compat
from k2rl.config import RunConfig
from k2rl.run.components import check_components
from k2rl.data.sources import TaskData
from k2rl.errors import K2RLError
from k2rl.distributed import state
from k2rl.run.evaluation import eval_rewards
from k2rl.trainer import config as rl_config, warm_start as sft
from k2rl.trainer.shapes import generation_shape


def _required_columns(config: RunConfig) -> dict[str, str]:
    """Dataset columns the recipe names or its rewards declare (parameters with no default), each with
    the key that asks for it."""
    from k2rl.rewards.registry import required_columns, resolve_reward

    columns = {}
    if config.trainer.budget.column is not None:
        columns[config.trainer.budget.column] = "trainer.budget.column"
    for index, spec in enumerate(config.rewards):
        column = spec.options.get("column")
        if isinstance(column, str):
            columns[column] = f"rewards[{index}].options.column ({spec.name})"
        for needed in required_columns(resolve_reward(spec.name), spec.options):
            columns.setdefault(needed, f"rewards[{index}] ({spec.name}, a parameter with no default)")
    return columns


def check_before_building(config: RunConfig, data: TaskData, num_processes: int | None = None) -> None:
    """Raise K2RLError for the first recipe/data constraint the run would break later."""
    check_components(config)
    num_processes = num_processes or state().num_processes
    compat.check(config, num_processes)  # a pair of features that does not compose
    trl = rl_config.trl_options(config.trainer)  # unknown, owned or mistyped TRL fields
    sft.trl_options(config.warm_start)
    shape = generation_shape(config.trainer, num_processes, trl)
    if len(data.train) < shape.prompts:
        raise K2RLError(
            f"data: {len(data.train)} training row(s), but each generation batch needs {shape.prompts} distinct prompts "
            f"({shape.completions} completions / trainer.num_generations {config.trainer.num_generations}); "
            "add rows or lower trainer.per_device_train_batch_size"
        )
    if config.warm_start.enabled:
        for key in ("max_steps", "batch_size"):
            if getattr(config.warm_start, key) < 1:
                raise K2RLError(f"warm_start.{key} must be at least 1, got {getattr(config.warm_start, key)} "
                                "(or warm_start.enabled=false)")
        if config.warm_start.answer_drills < 0:
            raise K2RLError(f"warm_start.answer_drills must be at least 0, got {config.warm_start.answer_drills}")
    check_eval_inputs(config, data.eval)
    check_environment(config)
    for split, rows in (("training", data.train), ("held-out", data.eval)):
        for column, key in _required_columns(config).items():
            if column not in rows.column_names:
                raise K2RLError(f"{key} names column {column!r}, which the {split} data does not have "
                                f"(columns: {', '.join(rows.column_names)})")


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


def check_eval_inputs(config: RunConfig, held_out: Dataset) -> None:
    """The ``eval`` section against the held-out rows (also what ``k2rl eval`` checks before loading a model)."""
    for key in ("max_new_tokens", "batch_size"):
        if getattr(config.eval, key) < 1:
            raise K2RLError(f"eval.{key} must be at least 1, got {getattr(config.eval, key)}")
    if config.eval.k < 0 or config.eval.temperature <= 0:
        raise K2RLError(f"eval.k must be at least 0 and eval.temperature positive, got {config.eval.k} and "
                        f"{config.eval.temperature}")
    eval_rewards(config)  # every evaluation reward resolves, with its options
    if config.eval.by is not None and config.eval.by not in held_out.column_names:
        raise K2RLError(f"eval.by names column {config.eval.by!r}, which the held-out data does not have "
                        f"(columns: {', '.join(held_out.column_names)})")
