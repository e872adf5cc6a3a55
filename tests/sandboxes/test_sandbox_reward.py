"""The unit_tests reward: TRL's signature, both modes, code extraction, and None for sandbox failures."""

from __future__ import annotations

import pytest

from k2rl.errors import K2RLError
from k2rl.rewards import get_reward, registered_rewards
from k2rl.rewards.unit_tests import extract_code
from k2rl.sandboxes.verdict import Verdict

TESTS = "assert add(1, 2) == 3\nassert add(2, 2) == 4\n"
GOOD = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\n"
HALF = [{"role": "assistant", "content": "def add(a, b):\n    return 3\n"}]
EXIT = "```python\nimport sys\nsys.exit(0)\n```"


def test_registered():
    assert "unit_tests" in registered_rewards()


def test_extract_code_prefers_last_python_block():
    text = "```\nnot this\n```\n```python\nfirst = 1\n```\nprose\n```py\nsecond = 2\n```"
    assert extract_code(text) == "second = 2\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("x = 1") == "x = 1"


def test_pass_fraction_and_all_or_nothing():
    fraction = get_reward("unit_tests", mode="pass_fraction", timeout_s=10)
    assert fraction(["p"] * 3, [GOOD, HALF, EXIT], tests=[TESTS] * 3) == [1.0, 0.5, 0.0]
    strict = get_reward("unit_tests", mode="all_or_nothing")
    assert strict(["p"] * 3, [GOOD, HALF, EXIT], tests=[TESTS] * 3) == [1.0, 0.0, 0.0]


def test_list_of_asserts_entry_point_and_io_columns():
    reward = get_reward("unit_tests")
    assert reward(["p"], [GOOD], tests=[["assert add(1, 2) == 3", "assert add(0, 0) == 1"]]) == [0.5]
    humaneval = "def check(candidate):\n    assert candidate(2, 2) == 4\n"
    assert reward(["p"], [GOOD], tests=[humaneval], entry_point=["add"]) == [1.0]
    io = {"inputs": ["1 2\n", "5 5\n"], "outputs": ["3\n", "10\n"]}
    assert reward(["p"] * 2, ["a, b = map(int, input().split())\nprint(a + b)", "print(3)"], tests=[io] * 2) == [1.0, 0.5]


def test_sandbox_failure_becomes_none(monkeypatch):
    import k2rl.rewards.unit_tests as module

    class Broken:
        def run_tests_many(self, pairs, timeout_s):
            return [Verdict(False, "sandbox_error", detail="engine gone") for _ in pairs]

        def run_io_many(self, items, timeout_s):
            return []

    monkeypatch.setattr(module, "_sandbox", lambda backend, workers, endpoints=None: Broken())
    assert get_reward("unit_tests")(["p"], [GOOD], tests=[TESTS]) == [None]


def test_misconfiguration_is_a_k2rl_error():
    with pytest.raises(K2RLError, match="mode"):
        get_reward("unit_tests", mode="most")(["p"], [GOOD], tests=[TESTS])
    with pytest.raises(K2RLError, match="rows"):
        get_reward("unit_tests")(["p"], [GOOD], tests=[TESTS, TESTS])


def test_missing_tests_column_is_a_k2rl_error():
    with pytest.raises(K2RLError, match="tests"):
        get_reward("unit_tests")(["p"], [GOOD])
