"""Exact-answer reward: the final answer in a completion equals the gold ``answer`` column.

This is the cheap check the CPU quickstart needs (integer/decimal answers); the symbolic math checker
built on math-verify lives in :mod:`k2rl.rewards.math`.
"""

from __future__ import annotations

import re
from fractions import Fraction

from k2rl.errors import K2RLError
from k2rl.rewards.registry import register_reward

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")
_ANSWER_MARK = re.compile(r"answer\s*(?:is|:)?\s*", re.IGNORECASE)


def completion_text(completion) -> str:
    """Text of a completion in either TRL format: a string or a list of chat messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m.get("content") or "" for m in completion if m.get("role") == "assistant")
    raise TypeError(f"completion must be a str or a list of messages, got {type(completion).__name__}")


# Keyword arguments TRL passes to every reward that are not dataset columns.
TRAINER_KWARGS = frozenset({"trainer_state", "log_extra", "log_metric", "environments"})


def dataset_column(columns: dict, column: str, reward: str) -> list:
    """The dataset column ``column`` from a reward's keyword arguments, or a K2RLError naming the ones there are."""
    if column not in columns:
        present = sorted(k for k in columns if k not in TRAINER_KWARGS)
        raise K2RLError(f"reward {reward!r} needs the gold answer column {column!r}; the dataset has {present}")
    return columns[column]


def extract_final_number(text: str) -> str | None:
    """The number a response commits to: the first number after the last "answer", else the last number."""
    marks = list(_ANSWER_MARK.finditer(text))
    if marks:
        found = _NUMBER.search(text, marks[-1].end())
        if found:
            return found.group(0)
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _as_fraction(value: str) -> Fraction | None:
    try:
        return Fraction(value.strip().replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def answers_match(response: str, gold: str) -> bool:
    """True when the response's final number equals ``gold`` exactly (as rationals), and it is the only answer."""
    from k2rl.rewards.hedging import hedged

    if hedged(response, gold):
        return False
    predicted = extract_final_number(response)
    if predicted is None:
        return False
    gold_value, predicted_value = _as_fraction(str(gold)), _as_fraction(predicted)
    if gold_value is None or predicted_value is None:
        return predicted.strip() == str(gold).strip()
    return gold_value == predicted_value


@register_reward("exact_answer")
def exact_answer_reward(prompts, completions, column: str = "answer", **kwargs) -> list[float]:
    """1.0 where the completion's final number equals the gold column (``answer``), else 0.0."""
    golds = dataset_column(kwargs, column, "exact_answer")
    return [float(answers_match(completion_text(c), a)) for c, a in zip(completions, golds, strict=True)]
