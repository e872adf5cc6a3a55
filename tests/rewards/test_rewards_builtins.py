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


# ---- k1.5_length: hand-computed values ---------------------------------------------------------


class _State:
    def __init__(self, global_step):
        self.global_step = global_step


def test_k15_length_lambda_and_correctness_by_hand():
    reward = get_reward("k1.5_length")
    # one group of four: lengths 2, 4, 6, 10 -> lambda = 0.5 - (len - 2) / 8 = 0.5, 0.25, 0.0, -0.5
    completions = ["answer 3", "answer 7", "answer 3", "answer 7"]  # gold 3: samples 0 and 2 are correct
    ids = [[0] * 2, [0] * 4, [0] * 6, [0] * 10]
    scores = reward(prompts=["p"] * 4, completions=completions, completion_ids=ids, answer=["3"] * 4)
    assert scores == [0.5, 0.0, 0.0, -0.5]  # correct: lambda; wrong: min(0, lambda) = 0.0 and -0.5


def test_k15_length_is_per_group_and_zero_for_equal_lengths():
    reward = get_reward("k1.5_length", unit="chars")
    # group "a": lengths 8 and 10 (both correct) -> +0.5, -0.5; group "b": equal lengths -> 0, 0
    completions = ["answer 1", "answer 1  ", "answer 2", "answer 9"]
    scores = reward(prompts=["a", "a", "b", "b"], completions=completions, answer=["1", "1", "2", "2"])
    assert scores == [0.5, -0.5, 0.0, 0.0]


def test_k15_length_warmup_reads_trainer_state():
    reward = get_reward("k1.5_length", warmup_steps=3)
    kwargs = dict(prompts=["p", "p"], completions=["answer 1", "answer 1"], completion_ids=[[0], [0, 0, 0]], answer=["1", "1"])
    assert reward(**kwargs, trainer_state=_State(2)) == [0.0, 0.0]  # still warming up
    assert reward(**kwargs, trainer_state=_State(3)) == [0.5, -0.5]  # on from step 3
    assert reward(**kwargs) == [0.5, -0.5]  # outside a trainer: on


def test_k15_length_bad_options_are_user_errors():
    with pytest.raises(K2RLError, match="warmup_steps"):
        get_reward("k1.5_length", warmup_steps=-1)(prompts=["p"], completions=["x"], completion_ids=[[0]], answer=["1"])
    with pytest.raises(K2RLError, match="unit"):
        get_reward("k1.5_length", unit="words")(prompts=["p"], completions=["x"], answer=["1"])
    with pytest.raises(K2RLError, match="no option"):
        get_reward("k1.5_length", budget=3)
