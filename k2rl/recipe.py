"""The training recipe, top to bottom: policy -> warm start -> RL on expert adapters -> outputs.

Read this file to know what ``k2rl train`` does; each phase is one call into a module with one job.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from k2rl.checkpointing import checkpoint_step, forget_after, last_checkpoint, resume_run_dir
from k2rl.config import RunConfig
from k2rl.critic import bind_critic, verdict_format_rows, wire_rubric_rewards
from k2rl.data import load_task_data
from k2rl.environment import environment
from k2rl.distributed import from_main, is_main, wait_for_everyone
from k2rl.evaluation import heldout_accuracy
from k2rl.expert_lora import merged_expert_adapters
from k2rl.expert_select import effective_trainable_parameters
from k2rl.policy import count_parameters, init_policy, load_policy, resolve_model_source
from k2rl.rewards.composition import build_reward_funcs
from k2rl.rollouts.wiring import attach_backend, build_engine, vllm_args
from k2rl.routing_profile import select_for_run
from k2rl.run_outputs import MetricsCallback, MetricsLog, final_line, make_run_dir, plot_progress
from k2rl.trainer import build_trainer
from k2rl.warm_start import warm_start

EVAL_REWARD = "exact_answer"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class HeldOutEvalCallback(TrainerCallback):
    """Greedy held-out accuracy every ``every`` RL steps, written to the metrics log."""

    def __init__(self, tokenizer, dataset, log: MetricsLog, every: int, eval_config):
        self.tokenizer, self.dataset, self.log, self.every, self.eval_config = tokenizer, dataset, log, every, eval_config

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self.log.write("eval", state.global_step, accuracy=self.measure(model))

    def measure(self, model) -> float:
        with merged_expert_adapters(model):
            return heldout_accuracy(
                model,
                self.tokenizer,
                self.dataset,
                reward_name=EVAL_REWARD,
                max_new_tokens=self.eval_config.max_new_tokens,
                batch_size=self.eval_config.batch_size,
            )


def _say(message: str) -> None:
    if is_main():
        print(f"k2rl: {message}", flush=True)


def train(config: RunConfig, resume: str | bool | None = None) -> dict:
    """Run the whole recipe; returns the summary (also written to the run directory).

    ``resume`` (a run directory, or True for ``output_dir/run_name``) continues a run from its last
    complete checkpoint; phases finished before the checkpoint are not run again.
    """
    started = time.time()
    seed_everything(config.seed)
    if config.policy.model:
        resolve_model_source(config.policy.model)  # a wrong path fails now, before any work
    reward_specs, critic, refinement = wire_rubric_rewards(
        [vars(spec) for spec in config.rewards], config.critic, config.trainer.num_generations, config.seed
    )
    reward_funcs, reward_weights = build_reward_funcs(
        reward_specs,
        max_failure_fraction=config.reward_failures.max_failure_fraction,
        min_samples=config.reward_failures.min_samples,
    )
    data = load_task_data(config.data, config.seed)
    run_dir = resume_run_dir(config, resume) if resume else from_main(lambda: make_run_dir(config))
    checkpoint = last_checkpoint(run_dir) if resume else None
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    _say(f"run directory {run_dir}")
    if resume:
        if is_main():
            forget_after(metrics.path, checkpoint_step(checkpoint))
        wait_for_everyone()
        _say(f"resuming from {checkpoint or 'the start of RL'}")

    warm_started = resume and (run_dir / "warm_start").is_dir()  # finished before the interruption
    if warm_started:
        source = str(run_dir / "warm_start")
    elif config.policy.preset:
        source = str(run_dir / "initial_policy")
        if is_main():  # one process builds and saves, the others load what it saved
            init_policy(config.policy.preset, source, seed=config.seed)
        wait_for_everyone()
        _say(f"built a {config.policy.preset} policy")
    else:
        source = config.policy.model
    policy = load_policy(source, dtype=config.policy.dtype, trust_remote_code=config.policy.trust_remote_code)
    model, tokenizer = policy.model, policy.tokenizer

    if config.warm_start.enabled and not warm_started:
        _say(f"warm start: {config.warm_start.max_steps} supervised steps")
        if is_main():
            forget_after(metrics.path, -1, phases=("warm_start", "eval"))  # a resumed run redoes it from scratch
        model = warm_start(
            model, tokenizer, data.train, config.warm_start, run_dir / "warm_start_tmp", config.seed,
            callbacks=[MetricsCallback(metrics, "warm_start")],
            extra_rows=verdict_format_rows(data.train, reward_specs, config.warm_start.critic_format_rows, config.seed,
                                           config.critic.prompt),
        )
        base_dir = run_dir / "warm_start"
        partial = run_dir / "warm_start.partial"  # renamed when complete: a resume never sees half a model
        if is_main():
            shutil.rmtree(partial, ignore_errors=True)
            model.save_pretrained(partial)
            tokenizer.save_pretrained(partial)
            partial.rename(base_dir)
        wait_for_everyone()
        model.config.name_or_path = str(base_dir)  # the adapter records where its base model lives

    evaluator = HeldOutEvalCallback(tokenizer, data.eval, metrics, config.trainer.eval_steps, config.eval)
    measured = [r["accuracy"] for r in metrics.records() if r["phase"] == "eval" and r["step"] == 0]
    before = measured[0] if measured else evaluator.measure(model)
    if not measured:
        metrics.write("eval", 0, accuracy=before)
    _say(f"held-out accuracy before RL: {before:.3f}")

    selection = select_for_run(model, tokenizer, data.train, config.trainer.lora.expert_selection, run_dir)
    if selection is not None:
        chosen = sum(len(experts) for experts in selection.values())
        _say(f"expert-selective LoRA: {chosen} routed experts adapted (routing_profile.png)")

    engine = None
    if config.rollout.enabled:  # multi-turn tools / partial rollouts / overlap: the k2rl rollout engine
        engine, reward_funcs = build_engine(config.rollout, config.trainer, tokenizer, reward_funcs)
        _say(f"rollout engine: tools {config.rollout.tools or 'none'}, max {config.rollout.max_turns} turns, "
             f"partial rollouts {'on' if config.rollout.partial_rollouts else 'off'}, overlap {'on' if config.rollout.overlap else 'off'}")
    seed_everything(config.seed)
    trainer = build_trainer(
        model, tokenizer, data.train, reward_funcs, reward_weights, config.trainer, run_dir / "rl_tmp", config.seed,
        callbacks=[MetricsCallback(metrics, "rl"), evaluator], auxiliary_losses=[refinement] if refinement and config.critic.refine_adapter == "shared" else (),
        expert_selection=selection, rollout_func=engine, extra_args=vllm_args(config.rollout),
    )
    if engine is not None:
        attach_backend(engine, config.rollout, trainer)
    if critic is not None:
        critic_adapter = bind_critic(critic, refinement, config.critic, trainer, tokenizer)
    _, total = count_parameters(trainer.model)
    trainable = effective_trainable_parameters(trainer.model)  # masked-out expert blocks do not count
    _say(f"RL: {config.trainer.max_steps} steps, trainable {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%)")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    if critic is not None:
        steps = max(config.trainer.max_steps, 1)
        _say(f"critic: {critic.calls} verdicts in {critic.seconds:.1f}s ({critic.seconds / steps:.2f}s per step)")
        if critic_adapter is not None:
            _say(f"critic refinement (own adapter): {critic_adapter.updates} critic steps on {refinement.trained_examples} "
                 f"labelled verdicts, {critic_adapter.seconds / steps:.2f}s per RL step; saved in adapter/critic/")
        elif refinement is not None:
            _say(f"critic refinement: {refinement.trained_examples} labelled verdicts, forward {refinement.seconds / steps:.2f}s per step")
    after = evaluator.measure(trainer.model)
    metrics.write("eval", config.trainer.max_steps, accuracy=after)
    if is_main():
        trainer.model.save_pretrained(run_dir / "adapter")
        plot_progress(metrics.records(), run_dir / "progress.png")
    wall = time.time() - started
    summary = {
        "accuracy_before": before,
        "accuracy_after": after,
        "delta_pts": 100 * (after - before),
        "wall_s": round(wall, 1),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "rl_steps": config.trainer.max_steps,
        "run_dir": str(run_dir),
        "environment": environment(),
    }
    if is_main():
        _write_summary(run_dir, summary)
        print(final_line(before, after, wall, run_dir), flush=True)
    return summary


def _write_summary(run_dir: Path, summary: dict) -> None:
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# k2rl run summary",
        "",
        f"- held-out accuracy (greedy): {summary['accuracy_before']:.3f} -> {summary['accuracy_after']:.3f} "
        f"({summary['delta_pts']:+.1f} points)",
        f"- RL steps: {summary['rl_steps']}; trainable parameters: {summary['trainable_parameters']:,} "
        f"of {summary['total_parameters']:,}",
        f"- wall time: {summary['wall_s']:.0f} s",
        "- files: config.yaml, metrics.jsonl, progress.png, adapter/ (PEFT), warm_start/ (base model)",
    ]
    (run_dir / "summary.md").write_text("\n".join(lines) + "\n")
