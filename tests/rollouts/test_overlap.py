"""Overlapped scoring: a bounded hand-off that scores while the caller generates, and an engine whose
results do not depend on whether scoring overlapped."""

import threading
import time

import pytest

from k2rl.policy.build import load_policy
from k2rl.rollouts.backends import Sampling, TransformersBackend
from k2rl.rollouts.engine import Limits, RolloutEngine
from k2rl.rollouts.overlap import ScoringPipeline


def test_scoring_runs_while_the_caller_works():
    """Chunk k is scored while the caller is still producing chunk k+1: proven by ordering, not by time."""
    scored, producing = [], threading.Event()
    seen_while_producing = []

    def score(item):
        seen_while_producing.append(producing.wait(timeout=5))  # the caller is mid-"generation"
        scored.append(item)

    with ScoringPipeline(score, queue_size=2) as pipe:
        for item in range(4):
            pipe.submit(item)
            producing.set()  # "generating" the next chunk: the worker may score only now
            while len(scored) <= item:  # the caller keeps generating until the chunk is scored
                threading.Event().wait(0.001)
            producing.clear()
    assert scored == [0, 1, 2, 3]
    assert seen_while_producing == [True] * 4
    assert pipe.score_s > 0


def test_a_full_queue_blocks_the_producer():
    release, taken = threading.Event(), threading.Event()
    submitted = []

    def score(item):
        taken.set()
        release.wait(timeout=30)

    with ScoringPipeline(score, queue_size=1) as pipe:
        pipe.submit(0)  # taken by the worker, which then waits
        assert taken.wait(timeout=30)
        pipe.submit(1)  # fills the queue
        producer = threading.Thread(target=lambda: (pipe.submit(2), submitted.append(2)))
        producer.start()
        producer.join(timeout=0.3)
        assert producer.is_alive() and submitted == []  # back-pressure: it waits for the worker
        release.set()
        producer.join(timeout=30)
        assert submitted == [2]
    assert pipe.blocked_s > 0


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
