"""``k2rl rollouts RECIPE|RUN_DIR -n 8``: what the policy writes and how each reward scores it.

A few training prompts (seeded) are sampled with the recipe's policy -- a run directory's trained
adapter on its base model, or the recipe's ``policy.model`` (a ``policy.preset`` is built fresh: random
weights, useful to see the rewards at work before any training) -- at the trainer's temperature and
completion length, with the recipe's tools when it has some. Every reward of the recipe scores every
completion, isolated and called as in training; each completion is printed with its scores (a failed
score shows its reason) and saved as one JSON line in a new ``rollouts-*.jsonl``.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path

from k2rl import resources
from k2rl.config import load_config
from k2rl.errors import K2RLError

GROUP_REWARDS = frozenset({"rubric"})  # judged within a group by the critic: not scored here


def _free_path(folder: Path, stem: str) -> Path:
    path, suffix = folder / f"{stem}.jsonl", 1
    while path.exists():
        suffix += 1
        path = folder / f"{stem}-{suffix}.jsonl"
    return path


def _policy(config, model: str | None, adapter: str | None, scratch: Path):
    from k2rl.policy.build import init_policy, load_policy

    source = model or config.policy.model
    if source is None:
        source = str(init_policy(config.policy.preset, scratch / "policy", seed=config.seed))
        print(f"k2rl: policy.preset {config.policy.preset!r} built fresh (random weights: nothing trained yet)")
    policy = load_policy(source, dtype=config.policy.dtype, trust_remote_code=config.policy.trust_remote_code)
    network = policy.model
    if adapter is not None:
        from peft import PeftModel

        network = PeftModel.from_pretrained(network, adapter)
    return network, policy.tokenizer


def run_rollouts(target: str, overrides=(), n: int = 8, per_prompt: int = 1, model: str | None = None,
                 adapter: str | None = None, out: str | None = None, seed: int | None = None) -> list[dict]:
    """Sample ``n`` prompts x ``per_prompt`` completions, score them with every reward; returns the records."""
    from k2rl.run.eval_command import _sources

    if n < 1 or per_prompt < 1:
        raise K2RLError(f"-n and --per-prompt must be at least 1, got {n} and {per_prompt}")
    recipe, model, adapter, folder = _sources(Path(target), model, adapter)
    config = load_config(recipe, list(overrides))
    from k2rl.data.sources import load_task_data
    from k2rl.rewards.composition import build_reward_funcs
    from k2rl.rewards.convention import as_completions, call_reward, completion_token_ids
    from k2rl.run.evaluation import sampled_completions, tool_completions

    specs = [spec for spec in config.rewards if spec.name not in GROUP_REWARDS]
    if not specs:
        raise K2RLError("the recipe's rewards are all group-relative (rubric): nothing to score single completions with")
    reward_funcs, _ = build_reward_funcs(
        [{k: v for k, v in vars(spec).items() if v is not None} for spec in specs], max_failure_fraction=1.0)
    rows = load_task_data(config.data, config.seed).train
    chosen = sorted(random.Random(config.seed if seed is None else seed).sample(range(len(rows)), min(n, len(rows))))
    rows = rows.select(chosen)
    path = Path(out) if out else _free_path(folder, "rollouts")
    if out and path.exists():
        raise K2RLError(f"--out {path} exists; k2rl rollouts never writes over another file")
    with tempfile.TemporaryDirectory() as scratch:
        network, tokenizer = _policy(config, model, adapter, Path(scratch))
        prompts = list(rows["prompt"])
        try:
            if config.rollout.tools:
                groups = [[c] for c in tool_completions(network, tokenizer, prompts, config.rollout,
                                                        config.trainer.max_completion_length, config.eval.batch_size)]
            else:
                groups = sampled_completions(network, tokenizer, prompts, config.trainer.max_completion_length,
                                             config.eval.batch_size, per_prompt, config.trainer.temperature,
                                             config.seed if seed is None else seed)
            flat_prompts = [p for p, g in zip(prompts, groups) for _ in g]
            completions = as_completions(flat_prompts, [c for g in groups for c in g])
            columns = {c: [rows[i][c] for i, g in enumerate(groups) for _ in g] for c in rows.column_names if c != "prompt"}
            ids = completion_token_ids(tokenizer, completions)
            scores, failures = {}, {}
            for reward in reward_funcs:
                scores[reward.__name__] = call_reward(reward, flat_prompts, completions, ids, columns)
                failed = set(reward.failed_rows())
                failures[reward.__name__] = {i: reward.failure_stats.last_reason for i in failed}
        finally:
            resources.close_all()
    records = []
    for i, completion in enumerate(completions):
        record = {"prompt": flat_prompts[i], "completion": completion,
                  "rewards": {name: values[i] for name, values in scores.items()},
                  "failures": {name: why[i] for name, why in failures.items() if i in why},
                  **{c: v[i] for c, v in columns.items() if isinstance(v[i], (str, int, float, bool))}}
        records.append(record)
    _print(records)
    with path.open("w") as handle:
        handle.writelines(json.dumps(r, default=str) + "\n" for r in records)
    print(f"k2rl: {len(records)} rollouts of {len(chosen)} prompts, scored by {', '.join(scores)} -> {path}")
    return records


def _text(value) -> str:
    from k2rl.rewards.answer import completion_text

    if isinstance(value, list) and value and isinstance(value[0], dict):
        return "\n".join(f"[{m.get('role')}] {m.get('content')}" for m in value) if any(
            m.get("role") != "assistant" for m in value) else completion_text(value)
    return str(value)


def _print(records: list[dict]) -> None:
    for number, record in enumerate(records, 1):
        print(f"--- rollout {number}" + (f" (answer: {record['answer']})" if "answer" in record else ""))
        prompt = record["prompt"]
        print("prompt:     " + (prompt[-1]["content"] if isinstance(prompt, list) and prompt else str(prompt)))
        print("completion: " + _text(record["completion"]).replace("\n", "\n            "))
        parts = []
        for name, score in record["rewards"].items():
            if name in record["failures"]:
                parts.append(f"{name}=FAILED ({record['failures'][name]})")
            else:
                parts.append(f"{name}={'None' if score is None else f'{score:.3f}'}")
        print("rewards:    " + "  ".join(parts))
