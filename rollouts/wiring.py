"""From a recipe's ``rollout`` section to a running engine: what the recipe calls, in one place.

The engine owns scoring (that is what lets scoring overlap generation), so the trainer is handed
:func:`~k2rl.rollouts.scores.precomputed_rewards` -- same names and weights, scores read from the
rows -- and TRL's reward weighting, group normalisation and logging stay TRL's.
"""

from __future__ import annotations

from k2rl.config import RolloutConfig, TrainerConfig
from k2rl.rollouts.engine import Limits, RolloutEngine
from k2rl.rollouts.scores import precomputed_rewards
from k2rl.errors import K2RLError
from k2rl.rollouts.environment import Environment, build_environment, environment_class
from k2rl.rollouts.tools import build_tools


def recipe_environment(config: RolloutConfig) -> Environment:
    """The recipe's environment: ``rollout.environment`` (and its options), else ``rollout.tools`` for every row."""
    if config.environment is not None and config.tools:
        raise K2RLError("rollout.tools and rollout.environment: an environment names its own tools; give one")
    if config.environment is None and config.environment_options:
        raise K2RLError("rollout.environment_options without rollout.environment; name the environment")
    tools = None if config.environment else build_tools(config.tools, backend=config.sandbox,
                                                        timeout_s=config.tool_timeout_s)
    return build_environment(config.environment, config.environment_options, tools)


def build_engine(config: RolloutConfig, trainer_config: TrainerConfig, tokenizer, reward_funcs) -> tuple[RolloutEngine, list]:
    """``(engine, reward_funcs for the trainer)``; pass the engine as ``rollout_func``."""
    limits = Limits(
        max_turns=config.max_turns,
        max_tool_calls=config.max_tool_calls,
        token_budget=config.token_budget or trainer_config.max_completion_length,
        iteration_budget=config.iteration_budget if config.partial_rollouts else None,
        budget=trainer_config.budget if trainer_config.budget.column else None,
    )
    engine = RolloutEngine(tokenizer, environment=recipe_environment(config), limits=limits, reward_funcs=reward_funcs,
                           overlap=config.overlap, chunks=config.chunks, queue_size=config.queue_size)
    if config.max_staleness:
        from k2rl.rollouts.ahead import AheadRollouts

        engine = AheadRollouts(engine)
    return engine, precomputed_rewards(reward_funcs)


def verifiers_env_config(data) -> dict | None:
    """The verifiers env config of ``data.source: verifiers`` with ``data.options.env`` (else None)."""
    if data is None or data.source != "verifiers":
        return None
    return (data.options or {}).get("env")


def rollout_engine(config: RolloutConfig, trainer_config: TrainerConfig, tokenizer, reward_funcs, data=None):
    """``(engine, reward_funcs)`` when the recipe uses k2rl's engine, else ``(None, reward_funcs)`` unchanged.

    A verifiers env (``data.options.env``) runs its episodes through k2rl's chat endpoint instead
    (:class:`~k2rl.rollouts.verifiers_env.VerifiersRollouts`); its rewards read the episodes' own scores.
    """
    if (env := verifiers_env_config(data)) is not None:
        from k2rl.rollouts.verifiers_env import VerifiersRollouts

        return VerifiersRollouts(tokenizer, env, budget=config.token_budget or trainer_config.max_completion_length), \
            reward_funcs
    if not config.enabled:  # no tools, partial rollouts, overlap or vLLM: TRL's own generation runs
        return None, reward_funcs
    return build_engine(config, trainer_config, tokenizer, reward_funcs)


def describe(config: RolloutConfig, data=None) -> str:
    """One line saying which engine features a run uses."""
    if (env := verifiers_env_config(data)) is not None:
        return f"rollouts: episodes of the verifiers env {env.get('taskset', {}).get('id')!r} through k2rl's chat endpoint"
    if not config.enabled:
        return "rollouts: TRL's own generation"
    where = f"environment {config.environment}" if config.environment else f"tools {config.tools or 'none'}"
    own = environment_class(config.environment).max_turns if config.environment else None  # it wins, as in the engine
    return (f"rollout engine: {where}, max {config.max_turns if own is None else own} turns, "
            f"partial rollouts {'on' if config.partial_rollouts else 'off'}, overlap {'on' if config.overlap else 'off'}")


def attach_backend(engine: RolloutEngine | None, config: RolloutConfig, trainer, run_dir=None, seed: int = 0):
    """Pick the generation backend once the trainer exists: for ``vllm``, start k2rl's engine process for the
    trainer's policy (:func:`k2rl.rollouts.vllm_rollouts.start_vllm_rollouts`; closed with the run's resources).
    Otherwise the engine builds a TransformersBackend on first use."""
    if engine is not None and config.backend == "vllm":
        from k2rl.rollouts.vllm_rollouts import start_vllm_rollouts

        return start_vllm_rollouts(engine, config, trainer, run_dir or trainer.args.output_dir, seed)
    return None


def vllm_args(config: RolloutConfig) -> dict:
    """GRPOConfig fields for ``rollout.backend=vllm``: TRL's token-level importance-sampling correction of the
    engine's log-probabilities (TRL's own vLLM stays off; k2rl's engine is attached after the trainer is built)."""
    if config.backend != "vllm":
        return {}
    return {"vllm_importance_sampling_correction": True, "vllm_importance_sampling_mode": "token_truncate"}
