"""Which recipe features compose: every pair of feature values runs together in some row of a
generated pairwise cover, or is refused at config time in one line.

Features (each with its values; the first is "off"): the algorithm, how rollouts are generated (vLLM
synchronous or one step ahead among them), how prompts are sampled, the optimizer, and switches for routing replay, expert selection, per-task budgets, PTX, the
``k1.5_length`` reward, the rubric critic, two gloo processes and ``--resume``. :func:`cover` builds
rows (full assignments) greedily until every allowed pair of values of two features appears in some
row; :data:`REFUSED` lists the pairs that do not compose, and :func:`check` turns them into one
``k2rl: error:`` line naming both features, before any model loads (``k2rl.recipe.train`` calls it).

``python -m k2rl.compat`` prints the table of pairs and their outcome (the README keeps a copy);
``tests/test_compat_matrix.py`` runs every row for two real steps on a tiny policy and checks its
invariants. Rows using the vLLM backend are skipped, with the reason, where vLLM is not installed.
"""

from __future__ import annotations

import copy
import itertools
import sys
from pathlib import Path

from k2rl.errors import K2RLError
from k2rl.rollouts.vllm_engine import vllm_python

FEATURES: dict[str, tuple[str, ...]] = {
    "algorithm": ("grpo", "k2", "ppo"),
    "rollout": ("trl", "overlap", "tools", "partial", "vllm", "vllm_ahead"),
    "sampling": ("uniform", "prioritized", "curriculum", "dynamic", "filter"),
    "routing_replay": ("off", "on"),
    "expert_selection": ("off", "on"),
    "budgets": ("off", "on"),
    "ptx": ("off", "on"),
    "k15_length": ("off", "on"),
    "critic": ("off", "on"),
    "optimizer": ("adamw", "muon", "muonclip"),
    "processes": ("1", "2"),
    "resume": ("off", "on"),
}

# (feature, value, feature, value) -> why the pair is refused.
REFUSED: dict[tuple[str, str, str, str], str] = {
    ("rollout", "partial", "sampling", "dynamic"):
        "a refill round would rerun the rollout engine mid-step and carry its paused groups into the next step",
    ("rollout", "overlap", "critic", "on"):
        "the rubric critic generates with the policy on the scoring thread while the policy generates",
    ("rollout", "tools", "critic", "on"):
        "the rubric critic judges plain answers, not tool transcripts",
    ("rollout", "partial", "critic", "on"):
        "the rubric critic compares a group's answers, and partial rollouts score groups that finish across steps",
    ("algorithm", "ppo", "processes", "2"):
        "PPO's value head runs outside the model's forward, and DDP's unused-parameter search marks it ready twice",
    **{("rollout", engine, feature, value): reason
       for engine in ("vllm", "vllm_ahead")  # synchronous or one step ahead: the same engine, the same limits
       for (feature, value), reason in {
           ("processes", "2"): "each process would start a vLLM engine of its own on the same weights; run vLLM on one process",
           ("routing_replay", "on"):
               "routing replay records the experts chosen by the policy's own forwards, which vLLM does not run",
       }.items()},
    **{("rollout", "vllm_ahead", "sampling", sampler): "a batch returned one step late is not the rows the sampler drew "
       "for that step, so success rates would follow the wrong prompts" for sampler in ("prioritized", "curriculum")},
    ("rollout", "vllm_ahead", "sampling", "dynamic"):
        "a refill round needs this step's rows, and a batch returned one step late is the previous step's",
}


def describe_value(feature: str, value: str) -> str:
    """How a feature value reads in messages (``rollout=partial``)."""
    return f"{feature}={value}"


def refusal(a: str, x: str, b: str, y: str) -> str | None:
    """Why the pair (a=x, b=y) is refused, or None if it composes."""
    return REFUSED.get((a, x, b, y)) or REFUSED.get((b, y, a, x))


def allowed(row: dict[str, str]) -> bool:
    return not any(refusal(a, row[a], b, row[b]) for a, b in itertools.combinations(row, 2))


def features_of(config, num_processes: int = 1) -> dict[str, str]:
    """The feature values a loaded recipe (RunConfig) uses on ``num_processes`` processes (``--resume``
    is not a recipe key: it composes with everything)."""
    trainer, rollout = config.trainer, config.rollout
    if rollout.backend == "vllm":
        generation = "vllm_ahead" if rollout.max_staleness else "vllm"
    elif rollout.partial_rollouts:
        generation = "partial"
    elif rollout.tools:
        generation = "tools"
    elif rollout.overlap:
        generation = "overlap"
    else:
        generation = "trl"
    if trainer.dynamic_sampling.enabled:
        sampling = "dynamic"
    elif trainer.sampling.method != "uniform":
        sampling = trainer.sampling.method
    else:
        sampling = "filter" if config.data.filter is not None else "uniform"
    names = [r.name for r in config.rewards]
    return {
        "algorithm": trainer.algorithm,
        "rollout": generation,
        "sampling": sampling,
        "routing_replay": "on" if trainer.routing_replay else "off",
        "expert_selection": "on" if trainer.lora.expert_selection.threshold_p is not None else "off",
        "budgets": "on" if trainer.budget.column else "off",
        "ptx": "on" if trainer.ptx.weight else "off",
        "k15_length": "on" if "k1.5_length" in names else "off",
        "critic": "on" if "rubric" in names else "off",
        "optimizer": trainer.optimizer,
        "processes": "2" if num_processes > 1 else "1",
    }


# A verifiers env (data.options.env: its episodes run through k2rl's chat endpoint) against each
# feature value it does not compose with, and why. What is not listed composes (trainer-side features).
VERIFIERS_ENV_REFUSED: dict[tuple[str, str], str] = {
    ("rollout", "overlap"): "the env runs and scores its own episodes; there is no k2rl scoring to overlap",
    ("rollout", "tools"): "the env's harness runs its own turns and tools; drop rollout.tools / rollout.environment",
    ("rollout", "partial"): "an episode cannot be paused inside the env's harness",
    ("algorithm", "ppo"): "PPO's value head scores TRL's own sequences, not the endpoint's trajectories",
    ("sampling", "dynamic"): "a refill round would rerun every episode through the env mid-step",
    ("sampling", "filter"): "the difficulty filter samples one-turn answers, not the env's episodes",
    ("routing_replay", "on"): "routing replay records the rollout engine's own generation, not the endpoint's",
    ("budgets", "on"): "per-task budgets cut the rollout engine's trajectories; the env's harness sets its own limits",
    ("critic", "on"): "the rubric critic judges plain answers, not harness transcripts",
    ("processes", "2"): "each process would serve its own endpoint and run every episode; use one process",
}


def check_verifiers_env(config, used: dict[str, str]) -> None:
    """One line for the first feature a recipe with a verifiers env (``data.options.env``) uses with it."""
    data = config.data
    if data.source != "verifiers" or "env" not in (data.options or {}):
        return
    if config.rollout.environment is not None:
        used = {**used, "rollout": "tools"}
    if config.rollout.max_staleness:
        raise K2RLError("data.options.env (a verifiers env) does not compose with rollout.max_staleness: 1: "
                        "episodes run synchronously, one step's episodes on one step's weights")
    for feature, value in used.items():
        if reason := VERIFIERS_ENV_REFUSED.get((feature, value)):
            raise K2RLError(f"data.options.env (a verifiers env) does not compose with "
                            f"{describe_value(feature, value)}: {reason}")


def check(config, num_processes: int = 1) -> None:
    """Raise the one-line error for the first refused pair the recipe uses (before any model loads)."""
    used = features_of(config, num_processes)
    check_verifiers_env(config, used)
    for a, b in itertools.combinations(used, 2):
        if reason := refusal(a, used[a], b, used[b]):
            raise K2RLError(f"{describe_value(a, used[a])} does not compose with {describe_value(b, used[b])}: {reason}")


def _pairs() -> list[tuple[str, str, str, str]]:
    return [(a, x, b, y) for a, b in itertools.combinations(FEATURES, 2) for x in FEATURES[a] for y in FEATURES[b]]


# Values whose rows may be skipped on a machine without them: they get rows of their own, built after
# every other pair is covered, so a skipped row never takes another pair with it.
OPTIONAL = {("rollout", "vllm"), ("rollout", "vllm_ahead")}


def _involves_optional(pair) -> bool:
    a, x, b, y = pair
    return (a, x) in OPTIONAL or (b, y) in OPTIONAL


def cover() -> list[dict[str, str]]:
    """Rows (feature -> value) in which every allowed pair of values appears at least once.

    Greedy and deterministic: each new row starts from the first still-uncovered pair (pairs with an
    :data:`OPTIONAL` value last), then fills each other feature with the value that covers the most
    uncovered pairs (ties: the first value), never choosing a refused pair, nor an optional value
    the starting pair does not have.
    """
    order = list(FEATURES)
    uncovered = {p for p in _pairs() if not refusal(*p)}
    rows: list[dict[str, str]] = []
    while uncovered:
        a, x, b, y = min(uncovered, key=lambda p: (_involves_optional(p), order.index(p[0]), order.index(p[2]),
                                                    FEATURES[p[0]].index(p[1]), FEATURES[p[2]].index(p[3])))
        row = {a: x, b: y}
        for feature in FEATURES:
            if feature in row:
                continue
            best, best_gain = None, -1
            for value in FEATURES[feature]:
                candidate = {**row, feature: value}
                if (feature, value) in OPTIONAL or not allowed(candidate):
                    continue
                gain = sum((f, v, feature, value) in uncovered or (feature, value, f, v) in uncovered
                           for f, v in row.items())
                if gain > best_gain:
                    best, best_gain = value, gain
            row[feature] = best
        rows.append({f: row[f] for f in FEATURES})
        uncovered -= {(f, row[f], g, row[g]) for f, g in itertools.combinations(FEATURES, 2)}
    return _lightened(rows)


def _lightened(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """``rows`` with each value set back to its feature's first ("off") value wherever every pair the row
    covered with it is still covered by another row: the same cover, cheaper rows."""
    def count(rows_):  # rows with an optional value cover only their own pairs: they may be skipped
        counts: dict = {}
        for r in (r for r in rows_ if not _has_optional(r)):
            for f, g in itertools.combinations(FEATURES, 2):
                counts[(f, r[f], g, r[g])] = counts.get((f, r[f], g, r[g]), 0) + 1
        return counts

    counts = count(rows)
    for row in (r for r in rows if not _has_optional(r)):
        for feature in reversed(FEATURES):  # the costly switches (resume, processes, critic) first
            off = FEATURES[feature][0]
            if row[feature] == off or not allowed({**row, feature: off}):
                continue
            pairs = [(feature, row[feature], g, row[g]) if order_of(feature) < order_of(g) else (g, row[g], feature, row[feature])
                     for g in FEATURES if g != feature]
            if all(counts[p] > 1 for p in pairs):
                for p in pairs:
                    counts[p] -= 1
                row[feature] = off
                counts = count(rows)
    return rows


def _has_optional(row: dict[str, str]) -> bool:
    return any((f, v) in OPTIONAL for f, v in row.items())


def order_of(feature: str) -> int:
    return list(FEATURES).index(feature)


RUBRIC = Path(__file__).resolve().parents[1] / "configs" / "rubrics" / "core.yaml"

# The smallest recipe a row runs: a random tiny policy, no warm start, two RL steps of two groups.
BASE_RECIPE = {
    "policy": {"preset": "k2-tiny"},
    "seed": 0,
    "data": {"source": "arithmetic", "train_size": 16, "eval_size": 4, "options": {"max_operand": 5, "terms": 2}},
    "warm_start": {"enabled": False},
    "trainer": {"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 6,
                "logging_steps": 1, "eval_steps": 100, "learning_rate": 1.0e-3, "lora": {"r": 2, "alpha": 4}},
    "eval": {"max_new_tokens": 4, "batch_size": 4},
    "rewards": [{"name": "prompt_probe"}],
}

# What each value sets on top of BASE_RECIPE (dotted keys; "rewards+" appends a reward).
SETTINGS: dict[tuple[str, str], dict] = {
    ("algorithm", "k2"): {"trainer.algorithm": "k2"},
    ("algorithm", "ppo"): {"trainer.algorithm": "ppo"},
    ("rollout", "overlap"): {"rollout.overlap": True, "rollout.chunks": 2},
    ("rollout", "tools"): {"rollout.tools": ["python"], "rollout.max_turns": 2},
    ("rollout", "partial"): {"rollout.partial_rollouts": True, "rollout.iteration_budget": 3},
    ("rollout", "vllm"): {"rollout.backend": "vllm"},
    ("rollout", "vllm_ahead"): {"rollout.backend": "vllm", "rollout.max_staleness": 1},
    ("sampling", "prioritized"): {"trainer.sampling": {"method": "prioritized", "success_threshold": 0.5}},
    # easy first by the size of the answer: the arithmetic rows carry no other difficulty
    ("sampling", "curriculum"): {"trainer.sampling": {"method": "curriculum", "difficulty_column": "answer",
                                                      "success_threshold": 0.5, "start_fraction": 0.5}},
    ("sampling", "dynamic"): {"trainer.dynamic_sampling": {"enabled": True, "max_rounds": 1}},
    ("sampling", "filter"): {"data.filter": {"pass_k": 2, "min": 0.0, "max": 1.0}},
    ("routing_replay", "on"): {"trainer.routing_replay": True},
    ("expert_selection", "on"): {"trainer.lora.expert_selection": {"threshold_p": 0.5, "profile_prompts": 8}},
    ("budgets", "on"): {"trainer.budget": {"column": "answer", "budgets": {"0": 2, "1": 3}, "default": 6}},
    ("ptx", "on"): {"trainer.ptx": {"weight": 0.1, "batch_size": 2, "max_length": 32}},
    ("k15_length", "on"): {"rewards+": {"name": "k1.5_length", "weight": 0.1, "options": {"warmup_steps": 1}}},
    ("critic", "on"): {"rewards+": {"name": "rubric", "weight": 0.1,
                                    "options": {"rubrics": [str(RUBRIC)], "verifier": "exact_answer"}},
                       "critic": {"prompt": "compact", "pairs_per_group": 1, "max_new_tokens": 2, "batch_size": 4}},
    ("optimizer", "muon"): {"trainer.optimizer": "muon"},
    ("optimizer", "muonclip"): {"trainer.optimizer": "muonclip", "trainer.lora.targets": ["routed_experts", "attention"]},
    ("resume", "on"): {"trainer.save_steps": 1, "trainer.save_total_limit": 5},
}


def recipe(row: dict[str, str]) -> dict:
    """The recipe (as YAML would load it) that runs ``row``."""
    result = copy.deepcopy(BASE_RECIPE)
    for feature, value in row.items():
        for key, setting in SETTINGS.get((feature, value), {}).items():
            if key == "rewards+":
                result["rewards"].append(copy.deepcopy(setting))
                continue
            *path, last = key.split(".")
            node = result
            for part in path:
                node = node.setdefault(part, {})
            node[last] = copy.deepcopy(setting)
    return result


def skip_reason(row: dict[str, str]) -> str | None:
    """Why a row cannot run on this machine (None: it can)."""
    if row["rollout"] in ("vllm", "vllm_ahead") and vllm_python() is None:
        return "the vLLM environment (.venv-vllm, scripts/setup.sh) is not built"
    return None


def table(rows: list[dict[str, str]] | None = None, here: bool = True) -> list[str]:
    """One line per pair of values: the first row that runs it (``here``: and whether this machine skips
    it), or why it is refused."""
    rows = cover() if rows is None else rows
    lines = []
    for a, x, b, y in _pairs():
        if reason := refusal(a, x, b, y):
            lines.append(f"| {a}={x} | {b}={y} | refused: {reason} |")
            continue
        index = next(i for i, r in enumerate(rows) if r[a] == x and r[b] == y)
        skip = skip_reason(rows[index]) if here else None
        lines.append(f"| {a}={x} | {b}={y} | row {index}{f' (skipped here: {skip})' if skip else ''} |")
    return lines


def markdown() -> str:
    """The rows and the table of pairs, as the README keeps them."""
    rows = cover()
    refused = sum(1 for p in _pairs() if refusal(*p))
    lines = [f"{len(rows)} rows cover every allowed pair of values of {len(FEATURES)} features; {refused} pairs are "
             "refused. Each row runs two real RL steps on a tiny policy in `tests/test_compat_matrix.py`; rows with "
             "`rollout=vllm` skip, with the reason, where the vLLM environment is not built.", "",
             "| row | " + " | ".join(FEATURES) + " |", "|---" * (len(FEATURES) + 1) + "|"]
    lines += [f"| {i} | " + " | ".join(row[f] for f in FEATURES) + " |" for i, row in enumerate(rows)]
    lines += ["", "<details><summary>Every pair and its outcome</summary>", "", "| value | value | outcome |",
              "|---|---|---|", *table(rows, here=False), "", "</details>"]
    return "\n".join(lines)


def main() -> int:
    print(markdown())
    skipped = [i for i, row in enumerate(cover()) if skip_reason(row)]
    if skipped:
        print(f"\nskipped on this machine: rows {skipped} ({skip_reason(cover()[skipped[0]])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
