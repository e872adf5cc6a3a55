"""Composition: recipe specs -> named, isolated TRL reward callables and their weights."""

from __future__ import annotations

import pytest

from k2rl.errors import K2RLError
from k2rl.rewards import build_reward_funcs, get_reward, register_reward
from k2rl.rewards.registry import _REGISTRY


@pytest.fixture
def scratch_reward():
    @register_reward("test_constant")
    def constant(prompts, completions, value: float = 1.0, **kwargs):
        """Always ``value``."""
        return [value] * len(completions)

    yield constant
    _REGISTRY.pop("test_constant", None)


def test_specs_become_named_callables_and_weights(scratch_reward):
    funcs, weights = build_reward_funcs(
        [
            {"name": "format", "weight": 0.25},
            {"name": "test_constant", "options": {"value": 0.5}, "timeout_s": 5},
            "exact_answer",
        ]
    )
    assert [f.__name__ for f in funcs] == ["format", "test_constant", "exact_answer"]
    assert weights == [0.25, 1.0, 1.0]
    out = funcs[1](prompts=["p"], completions=["c"], completion_ids=None)
    assert out == [0.5]
    assert funcs[0](prompts=["p", "p"], completions=["\\boxed{3}", "3"]) == [1.0, 0.0]


def test_same_reward_twice_needs_labels(scratch_reward):
    with pytest.raises(K2RLError, match="appears twice"):
        build_reward_funcs(["test_constant", {"name": "test_constant", "options": {"value": 0}}])
    funcs, _ = build_reward_funcs(["test_constant", {"name": "test_constant", "label": "zero", "options": {"value": 0}}])
    assert [f.__name__ for f in funcs] == ["test_constant", "zero"]


def test_unknown_reward_lists_known_ones():
    with pytest.raises(K2RLError, match=r"unknown reward 'maths' \(known rewards: .*exact_answer.*math"):
        build_reward_funcs([{"name": "maths"}])


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"name": "format", "wieght": 2}, "unknown key"),
        ({"weight": 2}, "needs a 'name'"),
        ({"name": "format", "weight": "high"}, "weight must be a number"),
        ({"name": "format", "options": [1]}, "options must be a mapping"),
        ({"name": "format", "timeout_s": -1}, "timeout_s must be a positive"),
        ({"name": "format", "options": {"styel": "boxed"}}, r"has no option\(s\) \['styel'\]"),
        (42, "must be a mapping"),
    ],
)
def test_bad_specs_are_one_line_user_errors(spec, message):
    with pytest.raises(K2RLError, match=message):
        build_reward_funcs([spec])


def test_empty_reward_list_is_an_error():
    with pytest.raises(K2RLError, match="no rewards configured"):
        build_reward_funcs([])


def test_get_reward_binds_options_and_keeps_the_name(scratch_reward):
    bound = get_reward("test_constant", value=0.25)
    assert bound.__name__ == "test_constant"
    assert bound(prompts=["p"], completions=["c"]) == [0.25]


def test_registering_a_taken_name_is_an_error(scratch_reward):
    with pytest.raises(K2RLError, match="already registered"):
        register_reward("test_constant")(lambda prompts, completions, **kw: [])
