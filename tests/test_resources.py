"""k2rl.resources: one instance per key, made on first use; close_all closes each once, then starts over.
The math checker, the unit-test reward's sandboxes and the python tool's sandbox live there."""

from __future__ import annotations

import os
import threading

import pytest

from k2rl import resources


class Thing:
    def __init__(self, name: str = "thing", fail: bool = False):
        self.name, self.fail, self.closes = name, fail, 0

    def close(self) -> None:
        self.closes += 1
        if self.fail:
            raise RuntimeError(f"{self.name} would not close")


@pytest.fixture(autouse=True)
def fresh_registry():
    resources.close_all()
    yield
    resources.close_all()


def test_created_once_on_first_use_and_shared_by_key():
    made = []

    def factory():
        made.append(Thing())
        return made[-1]

    assert made == [] and resources.active() == []
    first = resources.shared("a", factory)
    assert made == [first] and resources.shared("a", factory) is first
    other = resources.shared(("a", 2), factory)
    assert other is not first and len(made) == 2
    assert resources.active() == ["a", ("a", 2)]


def test_one_instance_when_many_threads_ask_at_once():
    made, barrier = [], threading.Barrier(8)
    got = []

    def ask():
        barrier.wait()
        got.append(resources.shared("contended", lambda: made.append(Thing()) or made[-1]))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1 and all(item is made[0] for item in got) and len(got) == 8


def test_close_all_closes_each_exactly_once_and_the_next_use_builds_anew():
    a, b = resources.shared("a", Thing), resources.shared("b", Thing)
    resources.close_all()
    assert (a.closes, b.closes) == (1, 1) and resources.active() == []
    resources.close_all()  # nothing left: closing again closes nothing twice
    assert (a.closes, b.closes) == (1, 1)
    fresh = resources.shared("a", Thing)
    assert fresh is not a and fresh.closes == 0


def test_close_one_key():
    a, b = resources.shared("a", Thing), resources.shared("b", Thing)
    resources.close("a")
    resources.close("a")  # already gone: nothing to do
    assert (a.closes, b.closes) == (1, 0) and resources.active() == ["b"]
    assert resources.shared("a", Thing) is not a


def test_a_failing_close_does_not_keep_the_others_open():
    good, bad, later = (resources.shared(name, lambda n=name: Thing(n, fail=n == "bad")) for name in ("good", "bad", "later"))
    with pytest.raises(RuntimeError, match="bad would not close"):
        resources.close_all()
    assert (good.closes, bad.closes, later.closes) == (1, 1, 1) and resources.active() == []


def test_a_factory_error_or_an_unclosable_instance_registers_nothing():
    def broken():
        raise ValueError("no")

    with pytest.raises(ValueError):
        resources.shared("x", broken)
    with pytest.raises(TypeError, match="close"):
        resources.shared("x", object)
    assert resources.active() == []


def test_resources_imports_nothing_heavy():
    import subprocess
    import sys

    code = "import sys, k2rl.resources; print(sorted(m for m in ('torch', 'transformers', 'trl', 'k2rl.sandboxes', 'k2rl.rewards') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_math_checker_is_registered_and_its_workers_stop():
    from k2rl.rewards.math import get_checker

    checker = get_checker(workers=1, timeout_s=30.0)
    assert get_checker(workers=1, timeout_s=30.0) is checker
    assert get_checker(workers=1, timeout_s=31.0) is not checker
    assert checker.check_many([("The answer is $\\frac{1}{2}$.", "0.5")]) == [True]
    pids = checker.pool.worker_pids
    assert len(pids) == 1 and not _gone(pids[0])
    resources.close_all()
    assert checker.pool.worker_pids == [] and _gone(pids[0])
    assert get_checker(workers=1, timeout_s=30.0) is not checker


def _harness_processes(sandbox) -> list:
    return [slot.proc for slot in sandbox._slots]


def test_the_unit_test_sandbox_is_registered_and_its_harnesses_stop():
    from k2rl.rewards import get_reward
    from k2rl.rewards.unit_tests import _sandbox

    reward = get_reward("unit_tests", workers=1)
    assert reward(["p"], ["def add(a, b):\n    return a + b\n"], tests=["assert add(1, 2) == 3\n"]) == [1.0]
    sandbox = _sandbox("local", 1)
    assert _sandbox("local", 1) is sandbox
    processes = _harness_processes(sandbox)
    assert len(processes) == 1 and processes[0].poll() is None
    resources.close_all()
    assert sandbox._slots == [] and processes[0].poll() is not None
    assert _sandbox("local", 1) is not sandbox


def test_the_python_tool_sandbox_is_registered_and_its_harnesses_stop():
    from k2rl.rollouts.tools import PythonTool

    tool, other = PythonTool(workers=1), PythonTool(workers=1)
    assert tool({"code": "print(6 * 7)"}) == "42\n"
    sandbox = tool._get_sandbox()
    assert tool._get_sandbox() is sandbox and other._get_sandbox() is not sandbox  # one sandbox per tool
    processes = _harness_processes(sandbox)
    assert len(processes) == 1 and processes[0].poll() is None
    resources.close_all()
    assert sandbox._slots == [] and processes[0].poll() is not None
    assert tool({"code": "print(1)"}) == "1\n" and tool._get_sandbox() is not sandbox
    tool.close()
    assert tool._key not in resources.active()
