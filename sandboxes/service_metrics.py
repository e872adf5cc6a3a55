"""What a sandbox service reports at ``/metrics``: jobs, verdicts by status, latency, occupancy.

Counters are updated from the worker threads that run jobs and read from the event loop, hence the
lock. Latency percentiles are over the most recent ``window`` jobs, not since start-up, so an
operator sees the service as it is now. ``jobs.started`` counts jobs handed to a sandbox worker:
a refused request (401, 400, 413, 503) never moves it, which is what the tests check.
"""

from __future__ import annotations

import collections
import threading
import time


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of an already sorted, non-empty list."""
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class ServiceMetrics:
    def __init__(self, workers: int, window: int = 4096):
        self.workers = workers
        self._lock = threading.Lock()
        self._latency = collections.deque(maxlen=window)
        self._verdicts: collections.Counter = collections.Counter()
        self._responses: collections.Counter = collections.Counter()
        self.received = self.started = self.finished = 0
        self._since = time.monotonic()

    def accepted(self, jobs: int) -> None:
        with self._lock:
            self.received += jobs

    def job_started(self) -> None:
        with self._lock:
            self.started += 1

    def job_finished(self, status: str, seconds: float) -> None:
        with self._lock:
            self.finished += 1
            self._verdicts[status] += 1
            self._latency.append(seconds)

    def response(self, code: int) -> None:
        with self._lock:
            self._responses[str(code)] += 1

    def snapshot(self, *, draining: bool, requests_in_flight: int) -> dict:
        with self._lock:
            ordered = sorted(self._latency)
            running = self.started - self.finished
            latency = ({f"p{int(q * 100)}": round(percentile(ordered, q) * 1000, 3) for q in (0.5, 0.9, 0.99)}
                       if ordered else {})
            return {
                "jobs": {"received": self.received, "started": self.started, "finished": self.finished,
                         "running": running, "queued": self.received - self.started},
                "verdicts": dict(self._verdicts),
                "latency_ms": {**latency, "window": len(ordered)},
                "pool": {"workers": self.workers, "busy": min(running, self.workers),
                         "occupancy": round(min(running, self.workers) / self.workers, 3)},
                "responses": dict(self._responses),
                "requests_in_flight": requests_in_flight,
                "draining": draining,
                "uptime_s": round(time.monotonic() - self._since, 1),
            }
