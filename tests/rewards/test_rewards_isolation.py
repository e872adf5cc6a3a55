"""Failure isolation: every way a reward can misbehave becomes None, a count, a log line — or a stop."""

from __future__ import annotations

import asyncio
import logging
import math
import time

import pytest
from trl.trainer.utils import get_callable_name, is_async_callable

from k2rl.errors import K2RLError
from k2rl.rewards.isolation import isolate

PROMPTS = ["p1", "p2", "p3", "p4"]
COMPLETIONS = ["a", "b", "c", "d"]


def call(fn, **extra):
    return fn(prompts=PROMPTS, completions=COMPLETIONS, completion_ids=None, **extra)


def good(prompts, completions, **kwargs):
    return [1.0, 0.5, None, 0]


def test_good_reward_passes_values_through_and_keeps_none():
    wrapped = isolate(good, "good")
    assert call(wrapped) == [1.0, 0.5, None, 0.0]
    assert wrapped.failure_stats.failed == 0
    assert wrapped.__name__ == "good" and get_callable_name(wrapped) == "good"


def raises(prompts, completions, **kwargs):
    raise ZeroDivisionError("division by zero in my verifier")


def nan_at_1(prompts, completions, **kwargs):
    return [1.0, float("nan"), 0.0, 1.0]


def inf_at_0(prompts, completions, **kwargs):
    return [math.inf, 1.0, 0.0, -math.inf]


def strings(prompts, completions, **kwargs):
    return [1.0, "0.5", True, 0.0]


def tensor_rows(prompts, completions, **kwargs):
    import torch

    return [torch.ones(2), 1.0, 1.0, 1.0]


def too_short(prompts, completions, **kwargs):
    return [1.0, 1.0]


def not_a_list(prompts, completions, **kwargs):
    return 1.0


def hangs(prompts, completions, **kwargs):
    time.sleep(5)
    return [1.0] * len(completions)


@pytest.mark.parametrize(
    "fn, expected, failed, reason",
    [
        (raises, [None] * 4, 4, "raised ZeroDivisionError: division by zero in my verifier"),  # every sample alone too
        (nan_at_1, [1.0, None, 0.0, 1.0], 1, "returned nan"),
        (inf_at_0, [None, 1.0, 0.0, None], 2, "returned inf"),
        (strings, [1.0, None, None, 0.0], 2, "returned a non-number (str)"),
        (tensor_rows, [None, 1.0, 1.0, 1.0], 1, "returned a non-number (Tensor)"),
        (too_short, [None] * 4, 4, "returned 2 values for 4 samples"),
        (not_a_list, [None] * 4, 4, "returned float, not a list"),
    ],
)
def test_each_failure_mode_becomes_none_counted_logged(fn, expected, failed, reason, caplog):
    wrapped = isolate(fn, fn.__name__)
    with caplog.at_level(logging.WARNING, logger="k2rl.rewards.isolation"):
        out = call(wrapped)
    assert out == expected
    assert wrapped.failure_stats.failed == failed and wrapped.failure_stats.seen == 4
    assert wrapped.failure_stats.last_reason == reason
    assert wrapped.failed_rows() == [i for i, v in enumerate(expected) if v is None]
    assert fn.__name__ in caplog.text and reason in caplog.text


def test_numpy_and_torch_scalars_are_numbers():
    import numpy as np
    import torch

    wrapped = isolate(lambda prompts, completions, **kw: [np.float32(0.5), torch.tensor(1.0), np.int64(0), 1], "scalars")
    assert call(wrapped) == [0.5, 1.0, 0.0, 1.0]
    assert wrapped.failure_stats.failed == 0


def test_sync_timeout_returns_within_deadline():
    wrapped = isolate(hangs, "hangs", timeout_s=0.2)
    assert call(wrapped) == [None] * 4  # the hang would have returned scores: it was cut off
    assert wrapped.failure_stats.last_reason == "timed out after 0.2s"


async def async_good(prompts, completions, **kwargs):
    await asyncio.sleep(0)
    return [1.0] * len(completions)


async def async_hangs(prompts, completions, **kwargs):
    await asyncio.sleep(5)
    return [1.0] * len(completions)


async def async_raises(prompts, completions, **kwargs):
    raise RuntimeError("judge unavailable")


def test_async_reward_stays_async_for_trl():
    wrapped = isolate(async_good, "judge")
    assert is_async_callable(wrapped)
    assert asyncio.run(call(wrapped)) == [1.0] * 4


def test_async_timeout_and_exception_are_contained():
    slow = isolate(async_hangs, "slow_judge", timeout_s=0.2)
    assert asyncio.run(call(slow)) == [None] * 4  # the hang would have returned 1.0s: it was cut off
    assert slow.failure_stats.last_reason == "timed out after 0.2s"
    broken = isolate(async_raises, "broken_judge")
    assert asyncio.run(call(broken)) == [None] * 4
    assert broken.failure_stats.last_reason == "raised RuntimeError: judge unavailable"


def test_too_many_failures_stop_the_run_naming_the_reward():
    wrapped = isolate(raises, "flaky_verifier", max_failure_fraction=0.5, min_samples=8)
    assert call(wrapped) == [None] * 4  # 4 seen: below the minimum, contained
    with pytest.raises(K2RLError, match="reward 'flaky_verifier' failed on 8 of 8 samples.*ZeroDivisionError"):
        call(wrapped)


def test_failures_below_the_fraction_do_not_stop():
    wrapped = isolate(nan_at_1, "mostly_fine", max_failure_fraction=0.3, min_samples=4)
    for _ in range(5):
        assert call(wrapped) == [1.0, None, 0.0, 1.0]
    assert wrapped.failure_stats.fraction == pytest.approx(0.25)


def test_abstaining_with_none_is_not_a_failure():
    wrapped = isolate(lambda prompts, completions, **kw: [None] * len(completions), "abstains", min_samples=1)
    for _ in range(3):
        assert call(wrapped) == [None] * 4
    assert wrapped.failure_stats.failed == 0


def test_user_errors_from_a_reward_propagate():
    def misconfigured(prompts, completions, **kwargs):
        raise K2RLError("column 'solution' not in dataset")

    with pytest.raises(K2RLError, match="solution"):
        call(isolate(misconfigured, "misconfigured"))


def test_bad_settings_are_user_errors():
    with pytest.raises(K2RLError, match="max_failure_fraction"):
        isolate(good, "good", max_failure_fraction=1.5)
    with pytest.raises(K2RLError, match="timeout_s"):
        isolate(good, "good", timeout_s=0)


def raises_on_99(prompts, completions, **kwargs):
    if "99" in completions:
        raise ValueError("cannot parse 99")
    return [1.0 if c == "a" else 0.0 for c in completions]


def test_a_raise_on_one_sample_costs_that_sample_only():
    wrapped = isolate(raises_on_99, "regex_answer")
    out = wrapped(prompts=PROMPTS, completions=["a", "99", "c", "a"], completion_ids=[[1], [2], [3], [4]], answer=list("wxyz"))
    assert out == [1.0, None, 0.0, 1.0]
    assert wrapped.failed_rows() == [1]
    assert wrapped.failure_stats.failed == 1 and wrapped.failure_stats.seen == 4
    assert wrapped.failure_stats.last_reason == "raised ValueError: cannot parse 99"
    assert wrapped(prompts=PROMPTS, completions=COMPLETIONS) == [1.0, 0.0, 0.0, 0.0]
    assert wrapped.failed_rows() == []


def hangs_on_b(prompts, completions, **kwargs):
    if "b" in completions:
        time.sleep(5)
    return [1.0] * len(completions)


def test_a_timeout_on_one_sample_costs_that_sample_only():
    wrapped = isolate(hangs_on_b, "slow_on_b", timeout_s=0.3)
    assert call(wrapped) == [1.0, None, 1.0, 1.0]
    assert wrapped.failed_rows() == [1] and wrapped.failure_stats.last_reason == "timed out after 0.3s"


async def async_raises_on_c(prompts, completions, **kwargs):
    if "c" in completions:
        raise RuntimeError("judge down for c")
    return [0.5] * len(completions)


def test_async_reward_isolates_per_sample_too():
    wrapped = isolate(async_raises_on_c, "judge")
    assert asyncio.run(call(wrapped)) == [0.5, 0.5, None, 0.5]
    assert wrapped.failed_rows() == [2]


def test_every_call_has_a_default_timeout_unless_the_reward_bounds_its_own_time():
    import inspect

    from k2rl.rewards import get_reward
    from k2rl.rewards.isolation import DEFAULT_TIMEOUT_S, default_timeout

    assert inspect.signature(isolate).parameters["timeout_s"].default == DEFAULT_TIMEOUT_S > 0
    assert default_timeout(good) == default_timeout(get_reward("exact_answer")) == DEFAULT_TIMEOUT_S
    for name in ("math", "unit_tests"):  # worker processes / sandboxes with per-sample limits of their own
        assert default_timeout(get_reward(name)) is None
    assert default_timeout(get_reward("math", check_timeout_s=3)) is None  # options bound, still known


def test_the_bound_error_names_both_settings():
    wrapped = isolate(raises, "flaky", max_failure_fraction=0.5, min_samples=4,
                      bound_hint="rewards[1].max_failure_fraction for this reward, reward_failures.max_failure_fraction for all")
    with pytest.raises(K2RLError, match=r"rewards\[1\]\.max_failure_fraction.*reward_failures\.max_failure_fraction"):
        call(wrapped)
