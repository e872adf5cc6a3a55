"""The phases of ``k2rl train`` that touch the run directory: open it, start the policy, warm-start it,
write the outputs. :func:`k2rl.recipe.train` calls them in order; each is one step of the design
sentence, and each handles its own part of a resumed run (a finished phase is not run again).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from k2rl.config import RunConfig
from k2rl.data.sources import TaskData
from k2rl.layout import RunLayout
from k2rl.policy.build import Policy, init_policy, load_policy
from k2rl.policy.source import resolve_model_source
from k2rl.distributed import from_main, is_main, wait_for_everyone
from k2rl.run.environment import environment
from k2rl.run.evaluation import by_line
from k2rl.run.tool_metrics import tool_use_line, tool_use_summary
from k2rl.run.outputs import MetricsCallback, MetricsLog, final_line, make_run_dir, plot_progress
from k2rl.trainer.checkpointing import checkpoint_step, forget_after, last_checkpoint, resume_run_dir
from k2rl.trainer.step_cost import summary_line
from k2rl.trainer.warm_start import warm_start


def say(message: str) -> None:
    if is_main():
        print(f"k2rl: {message}", flush=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Run:
    """One run directory: where everything goes, its metrics log and, when resuming, its last checkpoint."""

    config: RunConfig
    dir: Path
    metrics: MetricsLog
    resuming: bool
    checkpoint: Path | None
    started: float

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.dir)

    @property
    def warm_started(self) -> bool:
        """The warm start finished before an interruption (its model is saved complete)."""
        return self.resuming and self.layout.warm_start.is_dir()


def open_run(config: RunConfig, resume: str | bool | None) -> Run:
    """A new run directory, or the one to continue (``resume``); checks the model path before any work."""
    started = time.time()
    seed_everything(config.seed)
    if config.policy.model:
        resolve_model_source(config.policy.model)  # a wrong path fails now, before any work
    run_dir = resume_run_dir(config, resume) if resume else from_main(lambda: make_run_dir(config))
    checkpoint = last_checkpoint(run_dir) if resume else None
    run = Run(config, run_dir, MetricsLog(RunLayout(run_dir).metrics), bool(resume), checkpoint, started)
    say(f"run directory {run_dir}")
    if resume:
        if is_main():
            forget_after(run.metrics.path, checkpoint_step(checkpoint))
        wait_for_everyone()
        say(f"resuming from {checkpoint or 'the start of RL'}")
    return run


def finished_summary(config: RunConfig, resume: str | bool) -> dict | None:
    """The summary of the run ``resume`` names when it already trained all ``trainer.max_steps`` (else None)."""
    summary_path = resume_run_dir(config, resume) / "summary.json"
    if not summary_path.is_file():
        return None
    summary = json.loads(summary_path.read_text())
    return summary if summary.get("rl_steps", 0) >= config.trainer.max_steps else None


def starting_policy(run: Run) -> Policy:
    """The policy RL starts from: a resumed run's warm start, a freshly built preset, or a checkpoint."""
    config = run.config
    if run.warm_started:
        source = str(run.layout.warm_start)
    elif config.policy.preset:
        source = str(run.layout.initial_policy)
        if is_main():  # one process builds and saves, the others load what it saved
            init_policy(config.policy.preset, source, seed=config.seed)
        wait_for_everyone()
        say(f"built a {config.policy.preset} policy")
    else:
        source = config.policy.model
    return load_policy(source, dtype=config.policy.dtype, trust_remote_code=config.policy.trust_remote_code)


def warm_start_phase(run: Run, policy: Policy, data: TaskData, extra_rows=None):
    """The supervised warm start (unless off or already done); the model is saved as ``warm_start/``."""
    config = run.config
    if not config.warm_start.enabled or run.warm_started:
        return policy.model
    say(f"warm start: {config.warm_start.max_steps} supervised steps")
    if is_main():
        forget_after(run.metrics.path, -1, phases=("warm_start", "eval"))  # a resumed run redoes it from scratch
    model = warm_start(
        policy.model, policy.tokenizer, data.train, config.warm_start, run.layout.warm_start_tmp, config.seed,
        callbacks=[MetricsCallback(run.metrics, "warm_start")], extra_rows=extra_rows, report_to=config.report_to,
    )
    base_dir, partial = run.layout.warm_start, run.layout.warm_start_partial  # renamed when complete
    if is_main():
        shutil.rmtree(partial, ignore_errors=True)
        model.save_pretrained(partial)
        policy.tokenizer.save_pretrained(partial)
        partial.rename(base_dir)
    wait_for_everyone()
    model.config.name_or_path = str(base_dir)  # the adapter records where its base model lives
    return model


def finish_run(run: Run, trainer, evaluator, before: float, trainable: int, total: int) -> dict:
    """Final held-out accuracy, the adapter, the plot and the summary (with the mean cost of a step, of
    the steps this process ran: a resumed run's since the resume); prints the run's last line."""
    after = evaluator.final(trainer.model, run.config.trainer.max_steps)
    if is_main():
        trainer.model.save_pretrained(run.layout.adapter)
        plot_progress(run.metrics.records(), run.layout.progress_plot)
    wall = time.time() - run.started
    summary = {
        "accuracy_before": before,
        "accuracy_after": after,
        "delta_pts": 100 * (after - before),
        "metric": evaluator.metric,
        "wall_s": round(wall, 1),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "rl_steps": run.config.trainer.max_steps,
        "step_cost": trainer.step_cost.summary(),
        "eval_before": evaluator.records.get(0),
        "eval_after": evaluator.records.get(run.config.trainer.max_steps),
        "tool_use": tool_use_summary(evaluator.records.get(0), evaluator.records.get(run.config.trainer.max_steps)),
        "run_dir": str(run.dir),
        "environment": environment(),
    }
    if callable(vllm := getattr(getattr(trainer, "vllm_generation", None), "summary", None)):
        summary["vllm"] = vllm()  # k2rl's vLLM engine: the largest log-prob gap seen, pushes (k2rl.rollouts.vllm_rollouts)
    if is_main():
        write_summary(run.dir, summary)
        if summary["step_cost"]:
            say(summary_line(summary["step_cost"]))
        if split := by_line(summary["eval_before"] or {}, summary["eval_after"] or {}, evaluator.metric):
            say(split)
        if tools := tool_use_line(summary["eval_before"] or {}, summary["eval_after"] or {}):
            say(tools)
        print(final_line(before, after, wall, run.dir, evaluator.metric), flush=True)
    return summary


def write_summary(run_dir: Path, summary: dict) -> None:
    RunLayout(run_dir).summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# k2rl run summary",
        "",
        f"- held-out accuracy (greedy, {summary['metric']}): {summary['accuracy_before']:.3f} -> {summary['accuracy_after']:.3f} "
        f"({summary['delta_pts']:+.1f} points)",
        f"- RL steps: {summary['rl_steps']}; trainable parameters: {summary['trainable_parameters']:,} "
        f"of {summary['total_parameters']:,}",
        f"- wall time: {summary['wall_s']:.0f} s",
        *([f"- {summary_line(summary['step_cost'])}"] if summary.get("step_cost") else []),
        *([f"- {split}"] if (split := by_line(summary.get("eval_before") or {}, summary.get("eval_after") or {},
                                              summary["metric"])) else []),
        *([f"- {tools}"] if (tools := tool_use_line(summary.get("eval_before") or {},
                                                    summary.get("eval_after") or {})) else []),
        "- files: config.yaml, metrics.jsonl, progress.png, adapter/ (PEFT), warm_start/ (base model)",
    ]
    RunLayout(run_dir).summary_md.write_text("\n".join(lines) + "\n")
