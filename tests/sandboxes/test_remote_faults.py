"""Faults mid-run: 2,000 unit-test jobs over three servers, one ``kill -9``'d and one drained.

Every job gets exactly one verdict, none is lost (no ``None`` reward, no unanswered job) or used
twice (each row's reward equals the fault-free run's, and each row's expected value is its own), and
the drained server finishes what it accepted and exits cleanly. Faults are triggered by the
client's own progress (batches answered), never by the clock.
"""

from __future__ import annotations

import signal
import threading

import pytest
from remote_support import TOKEN, start_servers, wait_until, write_token

import k2rl.rewards.unit_tests as unit_tests
from k2rl import resources
from k2rl.rewards import get_reward

JOBS = 2000


def _rows():
    # rewards 1.0 / 0.5 / 0.0 in a pattern only a job's own verdict reproduces
    completions = [f"```python\ndef f():\n    return {i % 7}\n```" for i in range(JOBS)]
    tests = [f"assert f() == {i % 7}\nassert f() != {i % 3}\n" if i % 5 else f"assert f() == {(i + 1) % 7}\n"
             for i in range(JOBS)]
    return completions, tests


@pytest.fixture
def servers(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("K2RL_SANDBOX_TOKEN", TOKEN)
    servers = start_servers(3, write_token(tmp_path_factory), workers=2)
    yield servers
    resources.close_all()  # the reward's remote sandbox, before its servers go
    for server in servers:
        server.stop()


def test_kill_and_drain_mid_run_lose_and_duplicate_nothing(servers):
    endpoints = [s.url for s in servers]
    reward = get_reward("unit_tests", backend="remote", endpoints=endpoints, timeout_s=5)
    completions, tests = _rows()
    clean = reward(["p"] * JOBS, completions, tests=tests)
    assert None not in clean and {0.0, 0.5, 1.0} == set(clean)

    sandbox = unit_tests._sandbox("remote", None, endpoints)  # the reward's client
    before = dict(sandbox.stats)
    total_batches = -(-JOBS // sandbox.batch_size)
    killed, drained = servers[0], servers[1]
    at_fault = {}

    def batches_done() -> int:
        return sandbox.stats["batches"] - before["batches"]

    def inject():
        wait_until(lambda: batches_done() >= total_batches // 4, "a quarter of the batches")
        killed.proc.send_signal(signal.SIGKILL)
        at_fault["kill"] = batches_done()
        wait_until(lambda: batches_done() >= total_batches // 2, "half of the batches")
        drained.proc.send_signal(signal.SIGTERM)
        at_fault["drain"] = batches_done()

    injector = threading.Thread(target=inject, daemon=True)
    injector.start()
    faulty = reward(["p"] * JOBS, completions, tests=tests)
    injector.join(timeout=60)

    assert at_fault["kill"] < total_batches and at_fault["drain"] < total_batches, at_fault  # mid-run
    assert faulty == clean
    assert sandbox.stats["verdicts"] - before["verdicts"] == JOBS
    assert sandbox.stats["unanswered"] == before["unanswered"]
    assert sandbox.stats["retries"] > before["retries"]  # the faults were met, not missed
    assert killed.proc.wait(timeout=30) == -signal.SIGKILL
    assert drained.proc.wait(timeout=60) == 0  # finished what it had accepted, then exited
    survivor = servers[2].metrics()
    assert survivor["jobs"]["running"] == 0 and survivor["jobs"]["finished"] > JOBS // 3
