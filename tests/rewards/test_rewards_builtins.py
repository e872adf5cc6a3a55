"""The small built-ins: format and length_penalty."""

from __future__ import annotations

import pytest

from k2rl.errors import K2RLError
from k2rl.rewards import get_reward
from k2rl.rewards.budget import overlength_penalty
from k2rl.rewards.format import has_boxed


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so $\\boxed{\\frac{1}{2}}$", True),
        ("\\boxed {x^{2}}", True),
        ("\\boxed{}", False),
        ("\\boxed{\\frac{1}{2}", False),  # never closed
        ("no box here", False),
        ("\\boxed{3} then \\boxed{", True),  # an earlier complete box counts
    ],
)
def test_has_boxed(text, expected):
    assert has_boxed(text) is expected


def test_format_styles_and_custom_pattern():
    completions = ["\\boxed{3}", "The final answer is 3", "<answer>3</answer>", "3",
                   [{"role": "assistant", "content": "<think>hm</think><answer>3</answer>"}]]
    score = lambda **options: get_reward("format", **options)(prompts=[""] * 5, completions=completions)
    assert score() == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert score(style="answer_is") == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert score(style="answer_tag") == [0.0, 0.0, 1.0, 0.0, 1.0]
    assert score(style="think_answer") == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert score(pattern=r"^\d+$") == [0.0, 0.0, 0.0, 1.0, 0.0]


def test_format_bad_settings_are_user_errors():
    with pytest.raises(K2RLError, match="unknown style 'boxd'"):
        get_reward("format", style="boxd")(prompts=[""], completions=[""])
    with pytest.raises(K2RLError, match="invalid pattern"):
        get_reward("format", pattern="(")(prompts=[""], completions=[""])


def test_overlength_penalty_shape():
    assert [overlength_penalty(n, 100, 20) for n in (50, 100, 110, 120, 500)] == [0.0, 0.0, -0.5, -1.0, -1.0]
    assert overlength_penalty(101, 100, 0) == -1.0


def test_length_penalty_counts_tokens_from_completion_ids():
    reward = get_reward("length_penalty", budget=4, window=4)
    ids = [[1, 2, 3], [1] * 6, [1] * 20]
    assert reward(prompts=[""] * 3, completions=["x", "x", "x"], completion_ids=ids) == [0.0, -0.5, -1.0]


def test_length_penalty_in_characters_and_errors():
    chars = get_reward("length_penalty", budget=5, window=5, unit="chars")
    assert chars(prompts=["", ""], completions=["short", "x" * 8]) == [0.0, pytest.approx(-0.6)]
    with pytest.raises(K2RLError, match="needs completion_ids"):
        get_reward("length_penalty")(prompts=[""], completions=["x"], completion_ids=None)
    with pytest.raises(K2RLError, match="unit must be"):
        get_reward("length_penalty", unit="words")(prompts=[""], completions=["x"])


def test_exact_answer_reads_the_configured_column():
    reward = get_reward("exact_answer", column="target")
    assert reward(prompts=["", ""], completions=["so 1200", "12"], target=["1200", "13"]) == [1.0, 0.0]
    with pytest.raises(K2RLError, match=r"'exact_answer' needs the gold answer column 'answer'; the dataset has \['target'\]"):
        get_reward("exact_answer")(prompts=[""], completions=["1"], target=["1"], log_metric=print)
