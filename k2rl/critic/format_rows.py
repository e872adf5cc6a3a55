"""Warm-start rows that teach a small policy the critic's verdict format, without teaching it a preference."""

from __future__ import annotations

import random

from datasets import Dataset

from k2rl.data.arithmetic import demonstration_text
from k2rl.rewards.rubric.prompt import critic_messages
from k2rl.rewards.rubric.verdict import verdict_text

IDENTICAL_SHARE = 0.25  # of the warm start's critic format rows: one response shown twice, answered "tie"


def verdict_format_rows(train, specs: list[dict], n: int, seed: int, style: str = "full"):
    """``n`` warm-start rows (``prompt``/``completion``) of critic prompts with verdicts that carry no preference.

    They teach a small policy to answer a comparison with ``Verdict: A|B|tie`` at all, and to read both
    responses before it does, without telling it which answer is better (that judgment is left to
    closed-loop refinement). Each row compares the gold answer (the row's demonstration where the task
    has one, so worked answers appear as they will in RL) with a near miss (another row's answer, in
    the task's own format, that differs from this one's) on one of the recipe's rubrics, rendered in prompt ``style``, under a **coin-flip** ``A``/``B`` label. An
    ``IDENTICAL_SHARE`` of the rows shows one of the two responses twice, answered ``tie``: equal
    responses are equally good under any rubric, so that label is a fact, not a preference. It is
    what makes a tiny critic compare the two responses at all (a critic trained on coin flips alone
    learns to ignore them, and refinement then starts from a flat loss). None when ``n`` is 0 or the
    recipe has no rubric reward.
    """
    rubrics = [r for spec in specs if spec.get("name") == "rubric" for r in (spec.get("options") or {}).get("rubrics", ())]
    if not n or not rubrics:
        return None
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        item = train[rng.randrange(len(train))]
        gold = demonstration_text(item)
        miss = _near_miss(train, item, gold, rng)
        if rng.random() < IDENTICAL_SHARE:
            a = b = rng.choice([gold, miss])
            verdict = "tie"
        else:
            a, b = (gold, miss) if rng.random() < 0.5 else (miss, gold)
            verdict = rng.choice("AB")
        messages = critic_messages(item["prompt"], a, b, rng.choice(rubrics), style)
        rows.append({"prompt": messages, "completion": [{"role": "assistant", "content": verdict_text(verdict)}]})
    return Dataset.from_list(rows)


def _near_miss(train, item, gold: str, rng, attempts: int = 20) -> str:
    """Another training row's demonstration that differs from ``gold``: a wrong answer in the task's own style."""
    for _ in range(attempts):
        other = demonstration_text(train[rng.randrange(len(train))])
        if other != gold and other.rsplit(" ", 1)[-1] != gold.rsplit(" ", 1)[-1]:
            return other
    return "I am not sure."  # a dataset of one answer: any other response will do, the label is random anyway
