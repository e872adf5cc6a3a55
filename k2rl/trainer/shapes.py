"""Batch shapes of the RL phase, checked from the recipe alone, before any model is built.

TRL validates the same arithmetic in ``GRPOConfig.__post_init__``, but only when the trainer is
built, after the policy and its warm start; these checks run first and name the recipe's keys.
The arithmetic follows TRL's (``generation_batch_size`` defaults to per-device batch x processes x
``steps_per_generation``, which defaults to ``gradient_accumulation_steps``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from k2rl.config import TrainerConfig
from k2rl.errors import K2RLError


@dataclass(frozen=True)
class GenerationShape:
    """Completions sampled per generation batch, and the distinct prompts they come from."""

    completions: int
    prompts: int


def generation_shape(recipe: TrainerConfig, num_processes: int, trl: Mapping = MappingProxyType({})) -> GenerationShape:
    """The run's generation batch, or a K2RLError naming the key that breaks it (``trl``: the recipe's
    ``trainer.trl`` fields, which may set ``generation_batch_size`` or ``steps_per_generation``)."""
    positive = ("per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "max_completion_length",
                "num_iterations")
    for name in positive:
        if getattr(recipe, name) < 1:
            raise K2RLError(f"trainer.{name} must be at least 1, got {getattr(recipe, name)}")
    if recipe.num_generations < 2:
        raise K2RLError(f"trainer.num_generations must be at least 2 (GRPO compares completions of one prompt), "
                        f"got {recipe.num_generations}")
    global_batch = recipe.per_device_train_batch_size * num_processes
    per_process = f"trainer.per_device_train_batch_size ({recipe.per_device_train_batch_size}) x {num_processes} process(es)"
    if "generation_batch_size" in trl and "steps_per_generation" in trl:
        raise K2RLError("trainer.trl: set generation_batch_size or steps_per_generation, not both")
    if "generation_batch_size" in trl:
        completions = trl["generation_batch_size"]
        if completions < 1 or completions % global_batch:
            raise K2RLError(f"trainer.trl.generation_batch_size ({completions}) must be a positive multiple of "
                            f"{per_process} = {global_batch}")
        source = f"trainer.trl.generation_batch_size ({completions})"
    else:
        steps, key = trl.get("steps_per_generation"), "trainer.trl.steps_per_generation"
        if steps is None:
            steps, key = recipe.gradient_accumulation_steps, "trainer.gradient_accumulation_steps"
        if steps < 1:
            raise K2RLError(f"{key} must be at least 1, got {steps}")
        completions = global_batch * steps
        source = f"the generation batch, {per_process} x {key} ({steps}) = {completions},"
    if completions % recipe.num_generations:
        raise K2RLError(f"{source} must be divisible by trainer.num_generations ({recipe.num_generations}): "
                        "every prompt's group of completions has to fit in one batch")
    return GenerationShape(completions=completions, prompts=completions // recipe.num_generations)
