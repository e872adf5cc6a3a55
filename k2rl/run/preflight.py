"""Checks of a recipe against its data, run before any model is built: a shape or a column that would
fail an hour into the run fails now, as one ``k2rl: error:`` line.

What the data loader checks itself (a file that is missing, empty or not JSON line by line, too few
rows to hold out an eval set, a mapped column that is absent) fails in :mod:`k2rl.data.sources`; this
module adds what needs the recipe and the data together. The README's "Fail fast" table lists both.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from k2rl.config import RunConfig
from k2rl.data.sources import TaskData
from k2rl.errors import K2RLError
from k2rl.distributed import state
from k2rl.run.recipe_checks import check_eval_section, check_recipe
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
    """Raise K2RLError for the first recipe/data constraint the run would break later (``num_processes``
    given: a launch simulated in a test; TRL's own validation, which reads the real process count, is
    then left out)."""
    launched = state().num_processes
    check_recipe(config, num_processes or launched)  # the recipe alone (k2rl train ran it before torch loaded)
    trl = rl_config.trl_options(config.trainer)  # unknown or mistyped TRL fields
    shape = generation_shape(config.trainer, num_processes or launched, trl)
    if num_processes in (None, launched):
        check_trl_configs(config)
    if len(data.train) < shape.prompts:
        raise K2RLError(
            f"data: {len(data.train)} training row(s), but each generation batch needs {shape.prompts} distinct prompts "
            f"({shape.completions} completions / trainer.num_generations {config.trainer.num_generations}); "
            "add rows or lower trainer.per_device_train_batch_size"
        )
    check_eval_inputs(config, data.eval)
    for split, rows in (("training", data.train), ("held-out", data.eval)):
        for column, key in _required_columns(config).items():
            if column not in rows.column_names:
                raise K2RLError(f"{key} names column {column!r}, which the {split} data does not have "
                                f"(columns: {', '.join(rows.column_names)})")


def check_trl_configs(config: RunConfig) -> None:
    """TRL's own validation of the two configs the run will build (``trainer.trl`` / ``warm_start.trl``
    combinations it refuses), now rather than after the warm start."""
    from k2rl.rollouts.wiring import vllm_args

    out = Path(config.output_dir)
    sft.trl_options(config.warm_start)  # unknown or mistyped SFTConfig fields
    if config.warm_start.enabled:
        sft.warm_start_args(config.warm_start, out, config.seed, report_to=config.report_to)
    weights = [spec.weight for spec in config.rewards]
    rl_config.grpo_config(config.trainer, weights, out, config.seed, report_to=config.report_to,
                          **vllm_args(config.rollout))


def check_eval_inputs(config: RunConfig, held_out: Dataset) -> None:
    """The ``eval`` section against the held-out rows (also what ``k2rl eval`` checks before loading a model)."""
    check_eval_section(config)
    if config.eval.by is not None and config.eval.by not in held_out.column_names:
        raise K2RLError(f"eval.by names column {config.eval.by!r}, which the held-out data does not have "
                        f"(columns: {', '.join(held_out.column_names)})")
