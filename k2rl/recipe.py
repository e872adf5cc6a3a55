"""The training recipe, top to bottom, as the design sentence reads: a K2 policy (built or loaded,
warm-started) samples groups through the rollout engine, rewards score them (unit tests, math checks,
the self-critic's rubric), and a GRPO/K2/PPO trainer on TRL updates LoRA adapters on its experts
(``data.filter``: on the training prompts of moderate difficulty only).

Each phase is one call into the room that owns it; read this file to know what ``k2rl train`` does.
"""

from __future__ import annotations

from k2rl import resources
from k2rl.config import RunConfig
from k2rl.critic.session import SelfCritic
from k2rl.data.sources import TaskData, load_task_data
from k2rl.experts.lora import check_policy_supports
from k2rl.experts.profile import select_for_run
from k2rl.experts.selection import effective_trainable_parameters
from k2rl.policy.build import count_parameters
from k2rl.rewards.composition import build_reward_funcs
from k2rl.rollouts.wiring import attach_backend, describe, rollout_engine, vllm_args
from k2rl.run.difficulty import difficulty_filter_phase
from k2rl.run.eval_rewards import eval_rewards
from k2rl.run.evaluation import HeldOutEvalCallback
from k2rl.run.outputs import MetricsCallback
from k2rl.run.recipe_checks import check_recipe
from k2rl.run.preflight import check_before_building
from k2rl.run.phases import (finish_run, finished_summary, open_run, say, seed_everything, starting_policy,
                             warm_start_phase)
from k2rl.trainer.build import build_trainer


def train(config: RunConfig, resume: str | bool | None = None, data: TaskData | None = None) -> dict:
    """Run the whole recipe; returns the summary (also written to the run directory).

    ``resume`` (a run directory, or True for ``output_dir/run_name``) continues a run from its last
    complete checkpoint; phases finished before the checkpoint are not run again. ``data``: rows given
    in code (:mod:`k2rl.api`) instead of the recipe's ``data.source``.
    """
    if resume and (done := finished_summary(config, resume)) is not None:
        say(f"run {done['run_dir']} already finished ({done['rl_steps']} of {config.trainer.max_steps} RL steps); "
            "nothing to resume (raise trainer.max_steps in a new run to train further)")
        return done
    check_recipe(config, rows_given=data is not None)  # the recipe alone: components, sizes, shapes, rewards, before any data is drawn
    data = data if data is not None else load_task_data(config.data, config.seed)
    check_before_building(config, data)  # shapes and columns fail now, before any model exists
    run = open_run(config, resume)
    critic = SelfCritic(config)  # no-op without a rubric reward
    reward_funcs, reward_weights = build_reward_funcs(
        critic.reward_specs,
        max_failure_fraction=config.reward_failures.max_failure_fraction,
        min_samples=config.reward_failures.min_samples,
    )
    try:
        policy = starting_policy(run)
        check_policy_supports(policy.model, config.trainer)  # the model's family fits the expert features, before warm start
        model = warm_start_phase(run, policy, data, extra_rows=critic.warm_start_rows(data.train))
        train_prompts = difficulty_filter_phase(run, model, policy.tokenizer, data.train, reward_funcs)
        evaluator = HeldOutEvalCallback(policy.tokenizer, data.eval, run.metrics, config.trainer.eval_steps, config.eval,
                                        eval_rewards(config), config.seed, rollout=config.rollout)
        before = evaluator.before_rl(model)
        say(f"held-out accuracy before RL: {before:.3f} ({evaluator.metric})")

        selection = select_for_run(model, policy.tokenizer, train_prompts, config.trainer.lora.expert_selection, run.dir)
        if selection is not None:
            say(f"expert-selective LoRA: {sum(map(len, selection.values()))} routed experts adapted (routing_profile.png)")
        engine, reward_funcs = rollout_engine(config.rollout, config.trainer, policy.tokenizer, reward_funcs,
                                              data=config.data)
        if engine is not None:
            say(describe(config.rollout, config.data))
        seed_everything(config.seed)
        trainer = build_trainer(
            model, policy.tokenizer, train_prompts, reward_funcs, reward_weights, config.trainer, run.layout.checkpoints,
            config.seed, callbacks=[MetricsCallback(run.metrics, "rl"), evaluator],
            auxiliary_losses=critic.auxiliary_losses(), expert_selection=selection, rollout_func=engine,
            extra_args=vllm_args(config.rollout), report_to=config.report_to,
        )
        evaluator.publish_to(trainer)  # held-out figures reach the trackers with the step's metrics
        attach_backend(engine, config.rollout, trainer, run.dir, config.seed)
        critic.attach(trainer, policy.tokenizer)

        _, total = count_parameters(trainer.model)
        trainable = effective_trainable_parameters(trainer.model)  # masked-out expert blocks do not count
        say(f"RL: {config.trainer.max_steps} steps, trainable {trainable:,} of {total:,} parameters "
            f"({100 * trainable / total:.2f}%)")
        trainer.train(resume_from_checkpoint=str(run.checkpoint) if run.checkpoint else None)
        for line in critic.report(config.trainer.max_steps):
            say(line)
        return finish_run(run, trainer, evaluator, before, trainable, total)
    finally:
        resources.close_all()  # sandboxes and checker pools the rewards started
