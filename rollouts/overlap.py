"""Score finished work on a worker thread while the caller generates the next piece.

Generation and scoring are two stages of a pipeline. :class:`ScoringPipeline` is the hand-off
between them: a bounded queue (``queue_size`` chunks waiting at most) and one worker thread that
scores them in order. When scoring falls behind, ``submit`` blocks -- back-pressure -- so finished
but unscored rollouts never pile up without bound.

On-policy semantics are the caller's to keep, and the engine keeps them by construction: it only
pipelines chunks of *one* generation batch, all sampled from the same weights before any optimizer
step, so overlapping changes when a reward is computed, never which weights produced the tokens.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

_STOP = object()


class ScoringPipeline:
    """``with ScoringPipeline(score) as pipe: pipe.submit(chunk)``; scores chunks on one worker thread.

    ``score_s`` is the total time spent scoring, ``blocked_s`` the time ``submit`` waited on a full
    queue. The first exception raised by ``score`` is re-raised when the block exits.
    """

    def __init__(self, score: Callable[[object], None], queue_size: int = 2):
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._score = score
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="k2rl-scoring", daemon=True)
        self.score_s = 0.0
        self.blocked_s = 0.0

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None:
                continue  # drain: the first failure is what the caller hears about
            started = time.perf_counter()
            try:
                self._score(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._error = exc
            self.score_s += time.perf_counter() - started

    def submit(self, item) -> None:
        if self._error is not None:
            raise self._error
        started = time.perf_counter()
        self._queue.put(item)  # blocks while queue_size chunks wait: back-pressure on generation
        self.blocked_s += time.perf_counter() - started

    def __enter__(self) -> "ScoringPipeline":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._queue.put(_STOP)
        self._thread.join()
        if self._error is not None and exc_info[0] is None:
            raise self._error
