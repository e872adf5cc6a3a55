"""Overlapped scoring: a bounded hand-off that scores while the caller generates, and an engine whose
results do not depend on whether scoring overlapped."""

import threading
import time

import pytest

from k2rl.policy import load_policy
from k2rl.rollouts.backends import Sampling, TransformersBackend
from k2rl.rollouts.engine import Limits, RolloutEngine
from k2rl.rollouts.overlap import ScoringPipeline


def test_scoring_runs_while_the_caller_works():
    scored = []
    started = time.perf_counter()
    with ScoringPipeline(lambda item: (time.sleep(0.2), scored.append(item)), queue_size=2) as pipe:
        for item in range(4):
            time.sleep(0.2)  # "generation" of the next chunk
            pipe.submit(item)
    wall = time.perf_counter() - started
    assert scored == [0, 1, 2, 3]
    assert wall < 0.8 + 0.2 + 0.25  # serial would be 1.6 s
    assert pipe.score_s == pytest.approx(0.8, abs=0.2)


def test_a_full_queue_blocks_the_producer():
    release = threading.Event()
    with ScoringPipeline(lambda item: release.wait(), queue_size=1) as pipe:
        pipe.submit(0)  # taken by the worker, which then waits
        time.sleep(0.05)
        pipe.submit(1)  # fills the queue
        timer = threading.Timer(0.3, release.set)
        timer.start()
        pipe.submit(2)  # must wait for the worker: back-pressure
    assert pipe.blocked_s >= 0.25


def test_a_scoring_error_reaches_the_caller():
    def score(item):
        raise ValueError(f"bad reward on {item}")

    with pytest.raises(ValueError, match="bad reward on 0"):
        with ScoringPipeline(score, queue_size=1) as pipe:
            pipe.submit(0)
            time.sleep(0.05)
            pipe.submit(1)


def test_overlapped_engine_gives_the_serial_results_and_scores_off_thread(tiny_policy_dir):
    policy = load_policy(str(tiny_policy_dir))
    threads = []

    def length(prompts, completions, completion_ids, **columns):
        threads.append(threading.current_thread().name)
        return [float(len(ids)) for ids in completion_ids]

    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}]} for i in range(4) for _ in range(2)]
    outputs = {}
    for overlap in (False, True):
        threads.clear()
        engine = RolloutEngine(policy.tokenizer, limits=Limits(token_budget=12), reward_funcs=[length],
                               backend=TransformersBackend(policy.model, policy.tokenizer), overlap=overlap, chunks=4)
        outputs[overlap] = engine.run(rows, 2, Sampling(temperature=0.0))
        assert len(threads) == 4 and set(threads) == ({"k2rl-scoring"} if overlap else {"MainThread"})
    assert outputs[True] == outputs[False]
