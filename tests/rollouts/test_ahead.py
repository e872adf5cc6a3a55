"""Rollouts one step ahead: what a reward logs while its batch is scored in the background reaches the
trainer on the training thread, when the batch is returned (the vLLM rows of tests/test_compat_matrix.py
run the whole path)."""

from __future__ import annotations

import threading

from k2rl.rollouts.ahead import DeferredLogging


def test_logging_calls_wait_for_the_replay_and_keep_their_order():
    seen, state = [], object()
    live = {"log_metric": lambda name, value: seen.append((threading.current_thread().name, name, value)),
            "log_extra": lambda column, values: seen.append((threading.current_thread().name, column, values)),
            "trainer_state": state}
    deferred = DeferredLogging(live)
    assert deferred.kwargs["trainer_state"] is state  # what is not logging passes through untouched

    def score():  # a reward on the background thread
        deferred.kwargs["log_metric"]("probe/rows", 4.0)
        deferred.kwargs["log_extra"]("why", ["a", "b"])
        deferred.kwargs["log_metric"]("probe/rows", 2.0)

    worker = threading.Thread(target=score, name="k2rl-ahead-test")
    worker.start()
    worker.join()
    assert seen == []
    deferred.replay(live)
    main = threading.current_thread().name
    assert seen == [(main, "probe/rows", 4.0), (main, "why", ["a", "b"]), (main, "probe/rows", 2.0)]
    deferred.replay(live)  # replayed once only
    assert len(seen) == 3


def test_a_trainer_without_logging_keywords_gets_none():
    deferred = DeferredLogging({"trainer_state": None})
    assert set(deferred.kwargs) == {"trainer_state"}
    deferred.replay({})
