"""The ``rubric`` reward: the critic compares a group's samples pairwise against rubrics.

For each group of samples answering one prompt, up to ``pairs_per_group`` pairs are judged, each in
both presentation orders and on each rubric (the shared ``rubrics`` files plus the prompt's own
rubric from ``rubric_column``). Verdicts become weighted net win rates (:mod:`.aggregate`).

Cost per call is ``groups x pairs_per_group x 2 x rubrics`` critic answers of at most the critic's
``max_new_tokens`` each; it is logged every step as ``rubric/judgements`` and ``rubric/critic_s``.

The critic is any object with ``judge(conversations) -> list[str]`` (one answer per chat). In a recipe
``k2rl train`` hands it the live policy (:class:`k2rl.critic.judge.PolicyCritic`); tests use scripted ones.

With a ``verifier`` (a reward name, e.g. ``exact_answer``), the reward also checks the critic against
it on the same batch: on pairs where exactly one sample passed, did the critic prefer that one
(``critic/agreement``)? With a ``refiner``, those pairs become preference labels handed to it
(``refiner.add(examples)``), which closes the loop (:mod:`k2rl.critic.refinement`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from k2rl.errors import K2RLError
from k2rl.rewards.answer import completion_text
from k2rl.rewards.registry import register_reward, verifier_outcomes
from k2rl.rewards.rubric.aggregate import Comparison, agreement, net_win_rates, preference_labels
from k2rl.rewards.rubric.pairs import group_indices, group_rng, sample_pairs
from k2rl.rewards.rubric.prompt import critic_messages
from k2rl.rewards.rubric.schema import Rubric, load_rubrics, row_rubric
from k2rl.rewards.rubric.verdict import parse_verdict, verdict_text

logger = logging.getLogger(__name__)


def _group_rubrics(shared: tuple[Rubric, ...], groups, column_values, column) -> list[list[Rubric]]:
    per_group = []
    for group in groups:
        rubrics = list(shared)
        if column_values is not None:
            own = row_rubric(column_values[group[0]], group[0], column)
            if own is not None:
                rubrics.append(own)
        per_group.append(rubrics)
    return per_group


@register_reward("rubric")
def rubric_reward(
    prompts,
    completions,
    rubrics=None,
    rubric_column: str | None = None,
    critic=None,
    pairs_per_group: int = 4,
    group_size: int | None = None,
    verifier: str | None = None,
    verifier_options: dict | None = None,
    refiner=None,
    seed: int = 0,
    prompt_style: str = "full",
    **kwargs,
) -> list[float | None]:
    """Weighted net win rate in [-1, 1] from pairwise critic verdicts; None where the critic abstained."""
    if critic is None:
        raise K2RLError("reward 'rubric' needs a critic (k2rl train wires the policy; or pass critic=)")
    if pairs_per_group < 1:
        raise K2RLError(f"reward 'rubric': pairs_per_group must be at least 1, got {pairs_per_group}")
    shared = load_rubrics(rubrics)
    if rubric_column is not None and rubric_column not in kwargs:
        raise K2RLError(f"reward 'rubric': rubric_column {rubric_column!r} is not a dataset column")
    if not shared and rubric_column is None:
        raise K2RLError("reward 'rubric' needs rubrics (files) or a rubric_column")
    log_metric = kwargs.get("log_metric") if callable(kwargs.get("log_metric")) else None

    groups = group_indices(list(prompts), group_size)
    column_values = kwargs[rubric_column] if rubric_column is not None else None
    group_rubrics = _group_rubrics(shared, groups, column_values, rubric_column)
    table: list[Rubric] = []  # every rubric used in this call; comparisons refer to it by index
    plan: list[tuple[int, int, int]] = []  # (shown as A, shown as B, rubric index)
    for group, rubrics_here in zip(groups, group_rubrics):
        indices = []
        for rubric in rubrics_here:
            table.append(rubric)
            indices.append(len(table) - 1)
        rng = group_rng(seed, [completion_text(completions[i]) for i in group])
        for i, j in sample_pairs(group, pairs_per_group, rng):
            for r in indices:
                plan += [(i, j, r), (j, i, r)]  # both orders, so position bias cancels

    started = time.perf_counter()
    conversations = [critic_messages(prompts[a], completions[a], completions[b], table[r], prompt_style) for a, b, r in plan]
    answers = list(critic.judge(conversations)) if conversations else []
    critic_s = time.perf_counter() - started
    if len(answers) != len(plan):
        raise RuntimeError(f"critic returned {len(answers)} answers for {len(plan)} comparisons")
    comparisons = [
        Comparison(a, b, r, table[r].weight, parse_verdict(text)) for (a, b, r), text in zip(plan, answers)
    ]
    scores = net_win_rates(len(completions), comparisons)

    abstained = Counter(c.verdict.reason for c in comparisons if not c.verdict.decided)
    unscored = sum(s is None for s in scores)
    if abstained:
        logger.info(
            "rubric critic abstained on %d of %d comparisons (%s); %d of %d samples unscored",
            sum(abstained.values()), len(comparisons), ", ".join(f"{k}: {v}" for k, v in abstained.most_common()),
            unscored, len(scores),
        )
    if log_metric is not None:
        log_metric("rubric/pairs", float(len(plan) // 2))
        log_metric("rubric/judgements", float(len(plan)))
        log_metric("rubric/abstentions", float(sum(abstained.values())))
        log_metric("rubric/unscored", float(unscored))
        log_metric("rubric/critic_s", critic_s)

    if verifier is not None:
        columns = {k: v for k, v in kwargs.items() if k != "log_metric"}
        passed = verifier_outcomes(verifier, verifier_options, prompts, completions, columns)
        core = {i for i, r in enumerate(table) if r.kind == "core"} or set(range(len(table)))
        stats = agreement(comparisons, passed, core)
        if log_metric is not None and stats.labelled:
            log_metric("critic/agreement", stats.rate)
            log_metric("critic/labelled", float(stats.labelled))
            log_metric("critic/decided", stats.decided / stats.labelled)
            if stats.decided:
                log_metric("critic/agreement_decided", stats.decided_rate)
        if refiner is not None:
            examples = []
            for group, winner_loser in _labels_by_group(groups, passed):
                for rubric in _core_rubrics(group_rubrics[group]):
                    for w, l in winner_loser:
                        examples.append(
                            (critic_messages(prompts[w], completions[w], completions[l], rubric, prompt_style), verdict_text("A"))
                        )
                        examples.append(
                            (critic_messages(prompts[w], completions[l], completions[w], rubric, prompt_style), verdict_text("B"))
                        )
            refiner.add(examples)
    elif refiner is not None:
        raise K2RLError("reward 'rubric': critic refinement needs a verifier (e.g. verifier: exact_answer)")
    return scores


def _core_rubrics(rubrics: list[Rubric]) -> list[Rubric]:
    return [r for r in rubrics if r.kind == "core"] or rubrics


def _labels_by_group(groups, passed):
    for g, group in enumerate(groups):
        labels = preference_labels([group], passed)
        if labels:
            yield g, labels


rubric_reward.bounds_own_time = True  # per-sample limits of its own: no outer default timeout (rewards/isolation.py)
