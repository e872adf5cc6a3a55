"""Failure isolation: one misbehaving reward must neither crash a run nor quietly poison it.

:func:`isolate` wraps a reward so that whatever goes wrong inside it — an exception, a call that
overruns its timeout, NaN/inf, a value that is not a number, a list of the wrong length — turns into
``None`` for the samples affected. TRL reads ``None`` as NaN and leaves those samples out of that
reward's mean and of the weighted sum, which is exactly "no opinion", unlike a 0 that would teach the
policy something false.

Containment alone would hide a reward that fails on every batch, so each wrapper counts failed
samples against samples seen. Once enough samples have been seen and the failed fraction exceeds the
configured limit, the next call raises :class:`K2RLError` naming the reward: the run stops with a
reason instead of training on noise.

Counts reach the trainer's logs through the ``log_metric`` keyword TRL passes to reward functions,
as ``rewards/<name>/failures`` (failed samples in this call).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from numbers import Real

from k2rl.errors import K2RLError

logger = logging.getLogger(__name__)

DEFAULT_MAX_FAILURE_FRACTION = 0.2
# Below this many samples a fraction says little (one failed batch of 8 would be 100%).
DEFAULT_MIN_SAMPLES = 32


@dataclass
class FailureStats:
    """Running counts for one wrapped reward; shared by every call of that wrapper."""

    seen: int = 0
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    last_reason: str | None = None  # why the most recent call failed, None if it did not
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, seen: int, failed: int, reason: str | None) -> None:
        with self.lock:
            self.seen += seen
            self.failed += failed
            self.last_reason = reason if failed else None
            if reason:
                self.reasons[reason] = self.reasons.get(reason, 0) + failed

    @property
    def fraction(self) -> float:
        return self.failed / self.seen if self.seen else 0.0


class _Timeout(Exception):
    pass


def _run_with_deadline(fn: Callable, kwargs: dict, timeout_s: float):
    """Call ``fn(**kwargs)`` on a daemon thread and give up waiting after ``timeout_s``.

    Python cannot kill a thread, so an overrunning call keeps running in the background until it
    returns; the caller just stops waiting. Rewards that can truly hang (symbolic math, untrusted
    code) should do their work in processes they can kill, as ``k2rl.rewards.math`` does.
    """
    box: dict = {}

    def target():
        try:
            box["value"] = fn(**kwargs)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller's thread)
            box["error"] = exc

    worker = threading.Thread(target=target, name=f"reward-{getattr(fn, '__name__', 'fn')}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise _Timeout
    if "error" in box:
        raise box["error"]
    return box["value"]


async def _await_with_deadline(coroutine, timeout_s: float | None):
    """Await a reward's coroutine, cancelling it after ``timeout_s`` (None: no limit)."""
    if not timeout_s:
        return await coroutine
    task = asyncio.ensure_future(coroutine)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        raise _Timeout
    return task.result()


def _as_number(value) -> float | None:
    """``value`` as a float if it is a real number (numpy and one-element torch scalars included)."""
    if isinstance(value, (bool, str, bytes)):  # a bool is almost always a verdict where a score was meant
        return None
    if not (isinstance(value, Real) or hasattr(value, "__float__")):
        return None
    try:
        return float(value)
    except Exception:  # noqa: BLE001  (e.g. a multi-element tensor)
        return None


def _check_output(output, expected: int) -> tuple[list, int, str | None]:
    """Validated rewards, number of failed samples and the reason for the first problem found."""
    if not isinstance(output, (list, tuple)):
        return [None] * expected, expected, f"returned {type(output).__name__}, not a list"
    if len(output) != expected:
        return [None] * expected, expected, f"returned {len(output)} values for {expected} samples"
    cleaned, failed, reason = [], 0, None
    for value in output:
        number = None if value is None else _as_number(value)
        if value is None:
            cleaned.append(None)  # the reward itself abstains: not a failure
        elif number is None or not math.isfinite(number):
            cleaned.append(None)
            failed += 1
            problem = f"a non-number ({type(value).__name__})" if number is None else str(number)
            reason = reason or f"returned {problem}"
        else:
            cleaned.append(number)
    return cleaned, failed, reason


class _Guard:
    """The bookkeeping shared by the sync and async wrappers of one reward."""

    def __init__(self, name: str, max_failure_fraction: float, min_samples: int):
        self.name = name
        self.max_failure_fraction = max_failure_fraction
        self.min_samples = min_samples
        self.stats = FailureStats()

    def failed_call(self, expected: int, reason: str) -> tuple[list, int, str]:
        return [None] * expected, expected, reason

    def finish(self, kwargs: dict, result: tuple[list, int, str | None]) -> list:
        rewards, failed, reason = result
        expected = len(rewards)
        self.stats.record(expected, failed, reason)
        if failed:
            logger.warning(
                "reward %r failed on %d of %d samples: %s (%d of %d failed so far)",
                self.name, failed, expected, reason, self.stats.failed, self.stats.seen,
            )
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric(f"rewards/{self.name}/failures", float(failed))
        if self.stats.seen >= self.min_samples and self.stats.fraction > self.max_failure_fraction:
            worst = max(self.stats.reasons, key=self.stats.reasons.get) if self.stats.reasons else "unknown"
            raise K2RLError(
                f"reward {self.name!r} failed on {self.stats.failed} of {self.stats.seen} samples "
                f"({self.stats.fraction:.0%} > max_failure_fraction {self.max_failure_fraction:.0%}); "
                f"most common reason: {worst}"
            )
        return rewards


def _expected_count(kwargs: dict) -> int:
    for key in ("completions", "prompts"):
        if kwargs.get(key) is not None:
            return len(kwargs[key])
    raise TypeError("reward called without `completions`")


def isolate(
    fn: Callable,
    name: str,
    *,
    timeout_s: float | None = None,
    max_failure_fraction: float = DEFAULT_MAX_FAILURE_FRACTION,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> Callable:
    """``fn`` wrapped so its failures become ``None`` rewards, are counted, logged, and bounded.

    The wrapper is called by keyword exactly as TRL calls reward functions and has ``__name__`` set
    to ``name``. It is ``async`` when ``fn`` is (TRL awaits those), so an async reward keeps running
    concurrently with the others; its timeout cancels the coroutine.
    """
    if not 0.0 <= max_failure_fraction <= 1.0:
        raise K2RLError(f"max_failure_fraction must be between 0 and 1, got {max_failure_fraction}")
    if timeout_s is not None and timeout_s <= 0:
        raise K2RLError(f"timeout_s for reward {name!r} must be positive, got {timeout_s}")
    guard = _Guard(name, max_failure_fraction, min_samples)
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(getattr(target, "__call__", None))

    def failed(exc: Exception, expected: int) -> tuple[list, int, str]:
        if isinstance(exc, _Timeout):
            return guard.failed_call(expected, f"timed out after {timeout_s:g}s")
        return guard.failed_call(expected, f"raised {type(exc).__name__}: {exc}")

    if is_async:

        async def isolated(**kwargs):
            expected = _expected_count(kwargs)
            try:
                output = await _await_with_deadline(fn(**kwargs), timeout_s)
            except K2RLError:
                raise
            except Exception as exc:  # noqa: BLE001  (containing it is the point)
                return guard.finish(kwargs, failed(exc, expected))
            return guard.finish(kwargs, _check_output(output, expected))

    else:

        def isolated(**kwargs):
            expected = _expected_count(kwargs)
            try:
                output = _run_with_deadline(fn, kwargs, timeout_s) if timeout_s else fn(**kwargs)
            except K2RLError:
                raise
            except Exception as exc:  # noqa: BLE001  (containing it is the point)
                return guard.finish(kwargs, failed(exc, expected))
            return guard.finish(kwargs, _check_output(output, expected))

    isolated.__name__ = isolated.__qualname__ = name
    isolated.__doc__ = getattr(fn, "__doc__", None)
    isolated.__wrapped__ = fn
    isolated.failure_stats = guard.stats
    return isolated
