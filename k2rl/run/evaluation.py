"""Held-out evaluation: the numbers a run is judged by.

Every evaluation reward (``eval.rewards``; default the recipe's rewards, minus the group-relative
``rubric``) scores one greedy completion per held-out prompt: its mean reward and the share of prompts
solved (full score, >= 1). With ``eval.k`` > 0, k sampled completions per prompt add pass@k (a prompt
counts when any of its k samples is solved). ``eval.by`` repeats the figures per value of a column.
The headline ``accuracy`` (the final line of ``k2rl train``) is the solved share of the first
evaluation reward. Generation is batched with left padding, the layout ``generate`` expects.
"""

from __future__ import annotations

from collections import defaultdict

from datasets import Dataset
from transformers import TrainerCallback

from k2rl.config import RunConfig
from k2rl.data.verifiers_tasks import ENV_COLUMN, SCORES_COLUMN
from k2rl.experts.lora import merged_expert_adapters
from k2rl.policy.generation import greedy_completions, sampled_completions
from k2rl.rewards.convention import as_completions, call_reward, completion_token_ids
from k2rl.run.tool_metrics import tool_use_report

def tool_completions(model, tokenizer, prompts: list, rollout, max_new_tokens: int, batch_size: int,
                     rows: list[dict] | None = None) -> list[list[dict]]:
    """Greedy multi-turn completions (lists of messages) with the recipe's tools, turns and tool-call limit.

    ``rollout`` is the recipe's ``rollout`` section; a completion may use ``rollout.token_budget`` (else
    ``max_new_tokens``) tokens in all, its own and the tools' answers, as in training. ``rows``: the
    held-out rows (an environment's setup and reward read their columns); an environment's own reward
    is written into each as ``environment_reward``.
    """
    from k2rl.rollouts.backends import Sampling, TransformersBackend
    from k2rl.rollouts.engine import Limits, RolloutEngine
    from k2rl.rollouts.wiring import recipe_environment

    environment = recipe_environment(rollout)
    limits = Limits(max_turns=rollout.max_turns, max_tool_calls=rollout.max_tool_calls,
                    token_budget=rollout.token_budget or max_new_tokens)
    engine = RolloutEngine(tokenizer, environment=environment, limits=limits, backend=TransformersBackend(model, tokenizer))
    was_training = model.training
    model.eval()
    try:
        rows = rows or [{"prompt": p} for p in prompts]
        completions, environment_rewards = [], []
        for start in range(0, len(rows), batch_size):
            completions += engine.complete(rows[start:start + batch_size], Sampling(temperature=0.0))
            environment_rewards += engine.last_environment_rewards
        if environment.has_reward:  # read by the `environment` reward, as in training
            for row, score in zip(rows, environment_rewards, strict=True):
                row["environment_reward"] = score
        return completions
    finally:
        environment.close()
        if was_training:
            model.train()


def full_scores(scores) -> list[bool]:
    """Which scores are a pass: the full score (>= 1) of a correctness reward; a failed score (None) is not."""
    return [s is not None and s >= 1.0 for s in scores]


def _stats(greedy: list, sampled: list[list] | None, k: int) -> dict:
    solved = full_scores(greedy)
    n = max(len(greedy), 1)
    stats = {"mean": sum(0.0 if s is None else float(s) for s in greedy) / n, "solved": sum(solved) / n}
    if sampled is not None:
        stats[f"pass@{k}"] = sum(any(full_scores(group)) for group in sampled) / n
    unscored = sum(s is None for s in greedy)
    if unscored:
        stats["unscored"] = unscored
    return stats


def evaluate(model, tokenizer, dataset: Dataset, rewards: list[tuple[str, object]], eval_config, seed: int = 0,
             rollout=None) -> dict:
    """The held-out report: per reward, greedy mean and solved share (and pass@k), overall and per ``eval.by``.

    With tools in ``rollout`` (the recipe's ``rollout`` section), the greedy completions are multi-turn
    and may call them, as in training; pass@k samples stay single-turn.
    """
    prompts = list(dataset["prompt"])
    columns = {c: list(dataset[c]) for c in dataset.column_names if c != "prompt"}
    multi_turn = rollout is not None and rollout.multi_turn
    episodes = ENV_COLUMN in columns  # a verifiers env's rows: greedy episodes, scored by verifiers (k2rl.rollouts.verifiers_env)
    greedy_columns = columns
    with merged_expert_adapters(model):
        if episodes:
            from k2rl.rollouts.verifiers_env import held_out_episodes

            rows = [{"prompt": p, **{c: v[i] for c, v in columns.items()}} for i, p in enumerate(prompts)]
            greedy, scores_column = held_out_episodes(model, tokenizer, rows, eval_config.max_new_tokens)
            greedy_columns = {**columns, SCORES_COLUMN: scores_column}  # pass@k samples stay one-turn, rescored
        elif multi_turn:
            rows = [{"prompt": p, **{c: v[i] for c, v in columns.items()}} for i, p in enumerate(prompts)]
            greedy = tool_completions(model, tokenizer, prompts, rollout, eval_config.max_new_tokens,
                                      eval_config.batch_size, rows)
            if "environment_reward" in rows[0]:
                columns["environment_reward"] = [r["environment_reward"] for r in rows]
        else:
            greedy = greedy_completions(model, tokenizer, prompts, eval_config.max_new_tokens, eval_config.batch_size)
        k = eval_config.k
        samples = (sampled_completions(model, tokenizer, prompts, eval_config.max_new_tokens, eval_config.batch_size,
                                       k, eval_config.temperature, seed) if k else None)
    greedy = as_completions(prompts, greedy)  # the training format (README: "The reward calling convention")
    scores = {}
    for label, reward in rewards:
        sampled = None
        if samples is not None:
            repeated = {c: [v for v in values for _ in range(k)] for c, values in columns.items()}
            flat_prompts = [p for p in prompts for _ in range(k)]
            flat = as_completions(flat_prompts, [c for g in samples for c in g])
            flat = call_reward(reward, flat_prompts, flat, completion_token_ids(tokenizer, flat), repeated)
            sampled = [flat[i * k : (i + 1) * k] for i in range(len(prompts))]
        scores[label] = (call_reward(reward, prompts, greedy, completion_token_ids(tokenizer, greedy), greedy_columns),
                         sampled)

    def report(rows: list[int]) -> dict:
        return {"rows": len(rows), "rewards": {
            label: _stats([g[i] for i in rows], None if s is None else [s[i] for i in rows], k)
            for label, (g, s) in scores.items()
        }}

    result = report(list(range(len(prompts))))
    metric = rewards[0][0]
    result = {"metric": metric, "accuracy": result["rewards"][metric]["solved"], **result}
    if multi_turn or episodes:  # the figures that say whether the tool is why
        result["tool_use"] = tool_use_report(greedy, full_scores(scores[metric][0]))
    if eval_config.by:
        groups = defaultdict(list)
        for i, value in enumerate(columns[eval_config.by]):
            groups[str(value)].append(i)
        result["by"] = {eval_config.by: {value: report(rows) for value, rows in sorted(groups.items())}}
    return result


def flat_metrics(report: dict) -> dict:
    """A report's figures as one flat record for logs and trackers: ``accuracy``, ``LABEL/mean``, ... and,
    with ``eval.by``, the same per group as ``COLUMN=VALUE/LABEL/mean``."""
    flat = {"accuracy": report["accuracy"]}
    flat.update({f"tool_use/{name}": value for name, value in report.get("tool_use", {}).items()})
    for label, stats in report["rewards"].items():
        flat.update({f"{label}/{name}": value for name, value in stats.items()})
    for column, groups in report.get("by", {}).items():
        for value, group in groups.items():
            for label, stats in group["rewards"].items():
                flat.update({f"{column}={value}/{label}/{name}": v for name, v in stats.items()})
    return flat


def by_line(before: dict, after: dict, metric: str) -> str | None:
    """``held-out by COLUMN: VALUE before -> after; ...`` (solved share of ``metric``), from two flat records."""
    keys = sorted(k for k in after if "=" in k and k.endswith(f"/{metric}/solved"))
    if not keys:
        return None
    column = keys[0].split("=", 1)[0]
    parts = [f"{k.split('=', 1)[1].split('/', 1)[0]} {before.get(k, float('nan')):.3f} -> {after[k]:.3f}" for k in keys]
    return f"held-out by {column} ({metric} solved): " + "; ".join(parts)


class HeldOutEvalCallback(TrainerCallback):
    """The held-out evaluation every ``every`` RL steps (and on demand), written to the metrics log."""

    def __init__(self, tokenizer, dataset, log, every: int, eval_config, rewards, seed: int = 0, rollout=None):
        self.tokenizer, self.dataset, self.log, self.every = tokenizer, dataset, log, every
        self.eval_config, self.rewards, self.seed, self.rollout = eval_config, rewards, seed, rollout
        self.metric = rewards[0][0]
        self.publish = None  # the trainer's record_metric, once attached
        self.last: tuple[int, float] | None = None  # (step, accuracy) of the latest evaluation during RL
        self.records: dict[int, dict] = {}  # step -> the flat figures of the evaluation at that step

    def publish_to(self, trainer) -> None:
        """Send each evaluation during RL to the trainer's logs too (so to ``report_to``'s trackers); the
        one before RL (step 0) goes out as its own log record when training begins."""
        self.publish = trainer.record_metric
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        trainer = getattr(self, "trainer", None)
        if trainer is not None and state.global_step == 0 and 0 in self.records:
            trainer.log({f"heldout/{name}": float(value) for name, value in self.records[0].items()})

    def on_step_end(self, args, state, control, model=None, **kwargs):
        last_step = state.global_step == state.max_steps
        if (self.every and state.global_step % self.every == 0) or (last_step and self.publish is not None):
            self.last = (state.global_step, self.record(model, state.global_step))
            if self.publish is not None:
                control.should_log = True  # logged at this very step, with the RL metrics

    def record(self, model, step: int) -> float:
        """Evaluate ``model``, log the figures at ``step``; returns the headline accuracy."""
        report = evaluate(model, self.tokenizer, self.dataset, self.rewards, self.eval_config, self.seed, self.rollout)
        flat = flat_metrics(report)
        self.records[step] = flat
        self.log.write("eval", step, **flat)
        if self.publish is not None:
            for name, value in flat.items():
                self.publish(f"heldout/{name}", float(value))
        return report["accuracy"]

    def final(self, model, step: int) -> float:
        """Accuracy after RL: the evaluation of the last step when it ran (same weights), else measured now."""
        if self.last is not None and self.last[0] == step:
            return self.last[1]
        return self.record(model, step)

    def before_rl(self, model) -> float:
        """Accuracy at step 0: measured now, or read back from the log of a resumed run."""
        measured = [r for r in self.log.records() if r["phase"] == "eval" and r["step"] == 0]
        if measured:
            self.records[0] = {k: v for k, v in measured[0].items() if k not in ("phase", "step", "time")}
            return measured[0]["accuracy"]
        return self.record(model, 0)
