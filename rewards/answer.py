"""Exact-answer reward: the final answer in a completion equals the gold ``answer`` column.

This is the cheap check the CPU quickstart needs (integer/decimal answers); the symbolic math checker
built on math-verify lives in :mod:`k2rl.rewards.math`.
"""

from __future__ import annotations

import re
from fractions import Fraction

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
    """True when the response's final number equals ``gold`` exactly (as rationals)."""
    predicted = extract_final_number(response)
    if predicted is None:
        return False
    gold_value, predicted_value = _as_fraction(str(gold)), _as_fraction(predicted)
    if gold_value is None or predicted_value is None:
        return predicted.strip() == str(gold).strip()
    return gold_value == predicted_value


@register_reward("exact_answer")
def exact_answer_reward(prompts, completions, answer, **kwargs) -> list[float]:
    """1.0 where the completion's final number equals the ``answer`` column, else 0.0."""
    return [float(answers_match(completion_text(c), a)) for c, a in zip(completions, answer, strict=True)]
