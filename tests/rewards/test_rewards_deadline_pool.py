"""DeadlinePool: per-task deadlines enforced by the parent, from any thread, with kill-and-replace."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pool_tasks
import pytest

from k2rl.rewards.deadline_pool import ERROR, OK, TIMEOUT, DeadlinePool


@pytest.fixture
def pool(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(Path(pool_tasks.__file__).parent))
    pools = []

    def make(func, **kwargs):
        pools.append(DeadlinePool(func, **kwargs))
        return pools[-1]

    yield make
    for p in pools:
        p.close()


def test_overrunning_task_is_killed_and_later_tasks_still_run(pool):
    p = pool(pool_tasks.nap, workers=2, timeout_s=0.5)
    start = time.monotonic()
    out = p.map([0.01, 30, 0.01, 0.01, 0.01])
    assert time.monotonic() - start < 10  # start-up included; far below the 30 s task
    assert [status for status, _ in out] == [OK, TIMEOUT, OK, OK, OK]
    assert p.restarts == 1
    again = p.map([0.01, 0.01])
    assert [status for status, _ in again] == [OK, OK]


def test_deadline_holds_when_called_from_a_worker_thread(pool):
    p = pool(pool_tasks.nap, workers=1, timeout_s=0.5)
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("out", p.map([30, 0.01])))
    thread.start()
    thread.join(20)
    assert not thread.is_alive()
    assert [status for status, _ in box["out"]] == [TIMEOUT, OK]


def test_crashing_worker_and_raising_task_are_errors_not_hangs(pool):
    crash = pool(pool_tasks.die, workers=1, timeout_s=5)
    assert crash.map([3])[0] == (ERROR, "worker process died")
    raising = pool(pool_tasks.fail, workers=1, timeout_s=5)
    assert raising.map(["bad input"]) == [(ERROR, "ValueError: bad input")]


def test_tasks_with_one_key_share_a_worker_queue(pool):
    p = pool(pool_tasks.nap, workers=2, timeout_s=5)
    p._workers.extend([None, None])  # _queues only needs the number of workers
    queues = p._queues(list(range(8)), keys=["a", "b", "a", "c", "b", "a", "d", "c"])
    p._workers.clear()
    placed = {i: q for q, queue in enumerate(queues) for i in queue}
    for group in ([0, 2, 5], [1, 4], [3, 7]):
        assert len({placed[i] for i in group}) == 1
    assert sorted(map(len, queues)) == [4, 4]


def test_functions_must_be_importable():
    with pytest.raises(ValueError, match="top-level function"):
        DeadlinePool(lambda task: task)


def test_initializer_time_is_not_charged_to_the_first_task(pool):
    p = pool(pool_tasks.nap, workers=1, timeout_s=0.5, initializer=pool_tasks.slow_start)
    assert [status for status, _ in p.map([0.01, 0.01])] == [OK, OK]


def test_after_a_timeout_work_goes_on_while_the_replacement_starts(pool):
    p = pool(pool_tasks.nap, workers=2, timeout_s=0.5, initializer=pool_tasks.slow_start)
    assert [status for status, _ in p.map([30, 0.01])] == [TIMEOUT, OK]
    start = time.monotonic()
    assert [status for status, _ in p.map([0.01])] == [OK]  # the healthy worker takes it
    assert time.monotonic() - start < 0.8  # the replacement needs 1 s to start
    assert [status for status, _ in p.map([0.01, 0.01])] == [OK, OK]
