"""No false negatives: honest programs pass on both backends, including all 164 HumanEval solutions."""

from __future__ import annotations

import os

import pytest
from sandbox_support import BACKENDS, assert_humaneval_passes, open_sandbox

from k2rl.errors import K2RLError
from k2rl.sandboxes import get_sandbox


@pytest.fixture(scope="module", params=BACKENDS)
def sandbox(request):
    sb = open_sandbox(request.param, workers=2)
    yield sb
    sb.close()


LEGIT = {
    "threads": ("import threading\ndef total(n):\n    out = []\n    lock = threading.Lock()\n"
                "    def work(i):\n        with lock:\n            out.append(i * i)\n"
                "    ts = [threading.Thread(target=work, args=(i,)) for i in range(n)]\n"
                "    [t.start() for t in ts]\n    [t.join() for t in ts]\n    return sum(out)\n",
                "assert total(20) == sum(i * i for i in range(20))\n"),
    "subprocesses": ("import subprocess, sys\ndef run():\n"
                     "    a = subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True, text=True).stdout\n"
                     "    b = subprocess.run(['echo', 'hi'], capture_output=True, text=True).stdout\n"
                     "    c = subprocess.run('echo $((2 + 3))', shell=True, capture_output=True, text=True).stdout\n"
                     "    return [a.strip(), b.strip(), c.strip()]\n",
                     "assert run() == ['42', 'hi', '5']\n"),
    "multiprocessing": ("import multiprocessing as mp\ndef sq(x):\n    return x * x\n"
                        "def par(n):\n    with mp.get_context('fork').Pool(2) as pool:\n        return pool.map(sq, range(n))\n",
                        "assert par(5) == [0, 1, 4, 9, 16]\n"),
    "temp_files": ("import os, tempfile\ndef roundtrip(text):\n    with tempfile.TemporaryDirectory() as d:\n"
                   "        path = os.path.join(d, 'x.txt')\n        with open(path, 'w') as f:\n            f.write(text)\n"
                   "        with tempfile.NamedTemporaryFile('w+', delete=True) as g:\n            g.write(text)\n"
                   "            g.seek(0)\n            second = g.read()\n        return open(path).read() + second\n",
                   "assert roundtrip('ab') == 'abab'\n"),
    "deep_recursion": ("import sys\nsys.setrecursionlimit(100000)\ndef depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n",
                       "assert depth(50000) == 50000\n"),
    "heavy_printing": ("def noisy(n):\n    for i in range(n):\n        print('line', i, 'x' * 100)\n    return n\n",
                       "assert noisy(200000) == 200000\n"),
    "rich_values": ("def values():\n    return {'t': (1, 2.5, None), 's': {1, 2}, 'f': frozenset('ab'), 'b': b'\\x00\\xff',\n"
                    "            'c': 1 + 2j, 'n': [True, False, -0.0, float('inf')], (1, 'k'): 'tuple key', 7: 'int key',\n"
                    "            'big': 2 ** 200, 'u': 'h\\u00e9llo \\u2603'}\n",
                    "v = values()\nassert v['t'] == (1, 2.5, None) and type(v['t']) is tuple\nassert v['s'] == {1, 2}\n"
                    "assert v['f'] == frozenset('ab') and v['b'] == b'\\x00\\xff' and v['c'] == 1 + 2j\n"
                    "assert v[(1, 'k')] == 'tuple key' and v[7] == 'int key' and v['big'] == 2 ** 200\n"
                    "assert v['n'][3] == float('inf') and v['u'] == 'h\\u00e9llo \\u2603'\n"),
    "kwargs_and_exceptions": ("def div(a, b=1, *, strict=False):\n    if strict and a % b:\n        raise ValueError('inexact')\n"
                              "    return a / b\n",
                              "assert div(6, b=3) == 2.0\ntry:\n    div(7, 2, strict=True)\n    raise AssertionError('no raise')\n"
                              "except ValueError as e:\n    assert 'inexact' in str(e)\n"),
    "constants_and_helpers": ("LIMIT = [1, 2, 3]\ndef helper(x):\n    return x + 1\ndef main(x):\n    return helper(x) * 2\n",
                              "assert LIMIT == [1, 2, 3]\nassert main(helper(1)) == 6\n"),
    "classes_used_inside": ("class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n"
                            "        self.items.append(x)\ndef reverse(xs):\n    s = Stack()\n    for x in xs:\n        s.push(x)\n"
                            "    return s.items[::-1]\n", "assert reverse([1, 2, 3]) == [3, 2, 1]\n"),
    "module_state_between_calls": ("calls = []\ndef record(x):\n    calls.append(x)\n    return len(calls)\n",
                                   "assert record('a') == 1\nassert record('b') == 2\n"),
    "humaneval_style": ("from typing import List\ndef incr_list(l: List[int]) -> List[int]:\n    return [e + 1 for e in l]\n",
                        "def check(candidate):\n    assert candidate([]) == []\n    assert candidate([3, 2, 1]) == [4, 3, 2]\n\n"
                        "check(incr_list)\n"),
}


@pytest.mark.parametrize("name", sorted(LEGIT))
def test_legitimate_program_passes(sandbox, name):
    program, tests = LEGIT[name]
    verdict = sandbox.run_tests(program, tests, timeout_s=20)
    assert verdict.passed, verdict


def test_humaneval_canonical_solutions_all_pass(sandbox):
    assert_humaneval_passes(sandbox)


def test_wrong_solutions_fail_and_results_keep_input_order(sandbox):
    programs = [f"def f():\n    return {i}\n" for i in range(12)]
    verdicts = sandbox.run_tests_many([(p, "assert f() == 5\n") for p in programs], timeout_s=10)
    assert [v.passed for v in verdicts] == [i == 5 for i in range(12)]


def test_pass_fraction_counts_top_level_cases(sandbox):
    verdict = sandbox.run_tests("def f(x):\n    return x if x < 3 else 0\n",
                                "import math\nassert f(1) == 1\nassert f(2) == 2\nassert f(3) == 3\nf(0)\n")
    assert not verdict.passed and verdict.status == "failed"
    assert (verdict.cases_passed, verdict.cases_total) == (3, 4)
    assert "line 4" in verdict.detail


def test_stdin_stdout_cases(sandbox):
    program = "import sys\nnums = list(map(int, sys.stdin.read().split()))\nprint(sum(nums))\nprint('ok')\n"
    good = sandbox.run_io(program, [("1 2 3\n", "6\nok\n"), ("10", "10\nok  \n\n")], timeout_s=10)
    assert good.passed, good
    bad = sandbox.run_io(program, [("1 2 3\n", "6\nok\n"), ("1", "2\nok\n")], timeout_s=10)
    assert not bad.passed and bad.status == "failed"
    crash = sandbox.run_io("print(6)\nraise SystemExit(3)\n", [("", "6\n")], timeout_s=10)
    assert not crash.passed and crash.status == "crashed"
    slow = sandbox.run_io("while True:\n    pass\n", [("", "")], timeout_s=1)
    assert slow.status == "timeout"
    many = sandbox.run_io_many([("print(input())", [("a\n", "a\n")]), ("print(1)", [("", "2")])], timeout_s=10)
    assert [v.passed for v in many] == [True, False]


def test_load_errors_and_unsupported_uses_are_not_passes(sandbox):
    assert sandbox.run_tests("def f(:\n", "assert True\n").status == "error"
    assert sandbox.run_tests("def f():\n    return 1\n", "assert f(\n").status == "error"
    never_called = sandbox.run_tests("def f():\n    return 1\n", "def check(c):\n    assert c() == 1\n")
    assert never_called.status == "error" and "never call" in never_called.detail
    opaque = sandbox.run_tests("class Box:\n    pass\n", "assert Box() is not None\n")
    assert opaque.status == "unsupported"
    callback = sandbox.run_tests("def apply(f, x):\n    return f(x)\n", "assert apply(lambda v: v, 1) == 1\n")
    assert callback.status == "unsupported"


def test_user_errors_are_one_line():
    with pytest.raises(K2RLError, match="unknown sandbox backend"):
        get_sandbox("nope")
    with pytest.raises(K2RLError, match="must be a str"):
        get_sandbox("local").run_tests(b"x", "assert True")


def test_a_dead_harness_is_an_infrastructure_failure_then_replaced():
    import signal

    with get_sandbox("local", workers=1) as sb:
        sb._slots[0].proc.send_signal(signal.SIGKILL)
        sb._slots[0].proc.wait()
        verdict = sb.run_tests("def f():\n    return 1\n", "assert f() == 1\n")
        assert verdict.status == "sandbox_error" and verdict.infrastructure_failure and not verdict.passed
        assert sb.run_tests("def f():\n    return 1\n", "assert f() == 1\n").passed


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs two CPUs to choose from")
@pytest.mark.parametrize("pin", [True, False])
def test_local_workers_are_pinned_round_robin(pin):
    allowed = sorted(os.sched_getaffinity(0))
    program = "import os\ndef cpus():\n    return sorted(os.sched_getaffinity(0))\n"
    with get_sandbox("local", workers=2, pin=pin) as sb:
        # The harness is pinned; its sandbox and every candidate inherit the mask.
        masks = [os.sched_getaffinity(slot.proc.pid) for slot in sb._slots]
        seen = {v.detail.split("AssertionError: ", 1)[1].split(" (tests.py")[0]
                for v in sb.run_tests_many([(program, "assert False, cpus()\n")] * 8)}
    if pin:  # one CPU each, consecutive in the round-robin, and the candidates run there
        assert all(len(mask) == 1 for mask in masks) and masks[0] != masks[1], masks
        assert seen <= {str(sorted(mask)) for mask in masks}, seen
    else:
        assert masks == [set(allowed)] * 2 and seen == {str(allowed)}, (masks, seen)


def test_bad_options_are_k2rl_errors():
    with pytest.raises(K2RLError, match="workers"):
        get_sandbox("local", workers=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_killed_harness_leaves_no_sandbox_behind(backend):
    import signal
    import subprocess
    import time

    sb = open_sandbox(backend, workers=1)
    harness = sb._slots[0].proc.pid

    def left() -> list[str]:  # this harness's sandboxes: its bwrap children, or its labelled containers
        if backend == "docker":
            out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=k2rl.sandbox={harness}"],
                                 capture_output=True, text=True)
            return out.stdout.split()
        return [pid for pid in bwraps if os.path.exists(f"/proc/{pid}")]

    bwraps = open(f"/proc/{harness}/task/{harness}/children").read().split() if backend == "local" else []
    assert len(left()) == 2  # the candidate's sandbox and the judge's
    sb._slots[0].proc.send_signal(signal.SIGKILL)
    sb._slots[0].proc.wait()
    deadline = time.monotonic() + 15
    while left() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left()


def test_a_sandbox_that_cannot_start_is_one_clear_error(monkeypatch):
    import threading

    monkeypatch.setenv("K2RL_SANDBOX_CACHE", "/proc/k2rl-cannot-exist")  # the runtime copy must fail
    sb = get_sandbox("local", workers=2)
    errors = []

    def start():
        try:
            sb.start()
        except K2RLError as exc:
            errors.append(exc)

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "start() hung after a failed worker"
    assert errors and "failed to start" in str(errors[0]) and "\n" not in str(errors[0])
