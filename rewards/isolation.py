"""Failure isolation: one misbehaving reward must neither crash a run nor quietly poison it.

:func:`isolate` wraps a reward so that whatever goes wrong inside it — an exception, a call that
overruns its timeout, NaN/inf, a value that is not a number, a list of the wrong length — turns into
``None`` for the samples affected, and *only* those: when a batched call raises or times out, the
wrapper scores each sample of the batch on its own (concurrently, each under the timeout), so one
answer that trips the verifier costs that answer, not its 63 neighbours. Every call has a timeout
(:data:`DEFAULT_TIMEOUT_S` unless the recipe sets ``timeout_s``; none for the built-ins that bound
their own work per sample, :func:`default_timeout`).

The samples that failed in the latest call are reported by the wrapper's ``failed_rows()``; the
trainer (:mod:`k2rl.trainer._trl`) gives those rows no reward at all — no loss, left out of their
group's mean and std, counted — instead of letting the other rewards' sum stand in as if this one
had said 0. A ``None`` the reward returns itself is an abstention ("not applicable"), not a failure.

Containment alone would hide a reward that fails on every batch, so each wrapper counts failed
samples against samples seen. Once enough samples have been seen and the failed fraction exceeds the
configured limit, the next call raises :class:`K2RLError` naming the reward: the run stops with a
reason instead of training on noise.

The trainer logs the counts as ``rewards/<name>/failures`` (failed samples, summed, not averaged, per
logged step).
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
# Every call is bounded: a reward that hangs must cost a step its timeout, not the run.
DEFAULT_TIMEOUT_S = 60.0
# Per-sample retries of a failed batch run this many samples at a time.
RETRY_CONCURRENCY = 16
BOUND_HINT = "rewards[i].max_failure_fraction for this reward, reward_failures.max_failure_fraction for all"
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


def _check_output(output, expected: int) -> tuple[list, list[int], str | None]:
    """Validated rewards, the samples that failed and the reason for the first problem found."""
    if not isinstance(output, (list, tuple)):
        return [None] * expected, list(range(expected)), f"returned {type(output).__name__}, not a list"
    if len(output) != expected:
        return [None] * expected, list(range(expected)), f"returned {len(output)} values for {expected} samples"
    cleaned, failed, reason = [], [], None
    for index, value in enumerate(output):
        number = None if value is None else _as_number(value)
        if value is None:
            cleaned.append(None)  # the reward itself abstains: not a failure
        elif number is None or not math.isfinite(number):
            cleaned.append(None)
            failed.append(index)
            problem = f"a non-number ({type(value).__name__})" if number is None else str(number)
            reason = reason or f"returned {problem}"
        else:
            cleaned.append(number)
    return cleaned, failed, reason


def _one_sample(kwargs: dict, index: int, expected: int) -> dict:
    """The keyword arguments of a batched call cut down to sample ``index`` (per-sample lists only)."""
    return {
        key: [value[index]] if isinstance(value, list) and len(value) == expected else value
        for key, value in kwargs.items()
    }


def _describe(exc: BaseException, timeout_s: float | None) -> str:
    if isinstance(exc, _Timeout):
        return f"timed out after {timeout_s:g}s"
    return f"raised {type(exc).__name__}: {exc}"


def _merge_samples(results: list[tuple[list, list[int], str | None]]) -> tuple[list, list[int], str | None]:
    """Per-sample results (each for one sample) as one batch result."""
    rewards, failed, reason = [], [], None
    for index, (values, rows, why) in enumerate(results):
        rewards.append(values[0])
        if rows:
            failed.append(index)
            reason = reason or why
    return rewards, failed, reason


class _Guard:
    """The bookkeeping shared by the sync and async wrappers of one reward."""

    def __init__(self, name: str, max_failure_fraction: float, min_samples: int, bound_hint: str):
        self.name = name
        self.max_failure_fraction = max_failure_fraction
        self.min_samples = min_samples
        self.bound_hint = bound_hint
        self.stats = FailureStats()
        self.failed_rows: list[int] = []  # samples of the latest call that failed
        self.retried = False

    def note_retry(self, reason: str, expected: int) -> None:
        """Said once per reward: a batch failed as a whole and its samples are being scored one by one."""
        if not self.retried:
            self.retried = True
            logger.warning("reward %r %s on a batch of %d; scoring its samples one by one (said once)",
                           self.name, reason, expected)

    def finish(self, result: tuple[list, list[int], str | None]) -> list:
        rewards, failed_rows, reason = result
        expected, failed = len(rewards), len(failed_rows)
        self.failed_rows = list(failed_rows)
        self.stats.record(expected, failed, reason)
        if failed:
            logger.warning(
                "reward %r failed on %d of %d samples: %s (%d of %d failed so far)",
                self.name, failed, expected, reason, self.stats.failed, self.stats.seen,
            )
        if self.stats.seen >= self.min_samples and self.stats.fraction > self.max_failure_fraction:
            worst = max(self.stats.reasons, key=self.stats.reasons.get) if self.stats.reasons else "unknown"
            raise K2RLError(
                f"reward {self.name!r} failed on {self.stats.failed} of {self.stats.seen} samples "
                f"({self.stats.fraction:.0%} > max_failure_fraction {self.max_failure_fraction:.0%}); "
                f"most common reason: {worst} (the bound: {self.bound_hint})"
            )
        return rewards


def default_timeout(fn: Callable) -> float | None:
    """The timeout a reward gets when its recipe names none: :data:`DEFAULT_TIMEOUT_S`, except for a
    reward that bounds its own work per sample (``fn.bounds_own_time``: math's checker processes, the
    sandbox's per-test timeout, the critic's token limit), whose batch may rightly outlast any fixed bound."""
    target = fn
    while target is not None:
        if getattr(target, "bounds_own_time", False):
            return None
        target = getattr(target, "func", None) or getattr(target, "__wrapped__", None)
    return DEFAULT_TIMEOUT_S


def _expected_count(kwargs: dict) -> int:
    for key in ("completions", "prompts"):
        if kwargs.get(key) is not None:
            return len(kwargs[key])
    raise TypeError("reward called without `completions`")


def isolate(
    fn: Callable,
    name: str,
    *,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    max_failure_fraction: float = DEFAULT_MAX_FAILURE_FRACTION,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    bound_hint: str = BOUND_HINT,
) -> Callable:
    """``fn`` wrapped so its failures become ``None`` rewards for the samples that failed, are counted,
    logged, and bounded.

    The wrapper is called by keyword exactly as TRL calls reward functions and has ``__name__`` set
    to ``name``. It is ``async`` when ``fn`` is (TRL awaits those), so an async reward keeps running
    concurrently with the others; its timeout cancels the coroutine. ``timeout_s`` bounds each call
    (None: no bound); ``bound_hint`` names the setting that raises ``max_failure_fraction`` in the error.
    """
    if not 0.0 <= max_failure_fraction <= 1.0:
        raise K2RLError(f"max_failure_fraction must be between 0 and 1, got {max_failure_fraction}")
    if timeout_s is not None and timeout_s <= 0:
        raise K2RLError(f"timeout_s for reward {name!r} must be positive, got {timeout_s}")
    guard = _Guard(name, max_failure_fraction, min_samples, bound_hint)
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(getattr(target, "__call__", None))

    def failed_alone(exc: Exception, expected: int):
        """A one-sample call's failed result; for a batch None, once it is said its samples go one by one."""
        if expected == 1:
            return [None], [0], _describe(exc, timeout_s)
        guard.note_retry(_describe(exc, timeout_s), expected)
        return None

    def sync_call(kwargs: dict, expected: int):
        """One call, as a result; a raise or timeout of a batch falls back to one call per sample."""
        try:
            output = _run_with_deadline(fn, kwargs, timeout_s) if timeout_s else fn(**kwargs)
        except K2RLError:
            raise
        except Exception as exc:  # noqa: BLE001  (containing it is the point)
            return failed_alone(exc, expected) or _merge_samples(_each_sample(kwargs, expected))
        return _check_output(output, expected)

    def _each_sample(kwargs: dict, expected: int) -> list:
        def score(box: dict, index: int) -> None:
            try:
                box["result"] = sync_call(_one_sample(kwargs, index, expected), 1)
            except K2RLError as exc:  # a configuration error: stops the run from the caller's thread
                box["error"] = exc

        results: list = [None] * expected
        for start in range(0, expected, RETRY_CONCURRENCY):
            batch = [(index, {}) for index in range(start, min(start + RETRY_CONCURRENCY, expected))]
            threads = [threading.Thread(target=score, args=(box, index), name=f"reward-{name}-sample", daemon=True)
                       for index, box in batch]
            for thread in threads:
                thread.start()
            for thread, (index, box) in zip(threads, batch):
                thread.join()  # each per-sample call bounds itself by timeout_s
                if "error" in box:
                    raise box["error"]
                results[index] = box["result"]
        return results

    async def async_call(kwargs: dict, expected: int):
        try:
            output = await _await_with_deadline(fn(**kwargs), timeout_s)
        except K2RLError:
            raise
        except Exception as exc:  # noqa: BLE001  (containing it is the point)
            if (alone := failed_alone(exc, expected)) is not None:
                return alone
            singles = [async_call(_one_sample(kwargs, i, expected), 1) for i in range(expected)]
            return _merge_samples(list(await asyncio.gather(*singles)))
        return _check_output(output, expected)

    if is_async:

        async def isolated(**kwargs):
            return guard.finish(await async_call(kwargs, _expected_count(kwargs)))

    else:

        def isolated(**kwargs):
            return guard.finish(sync_call(kwargs, _expected_count(kwargs)))

    isolated.__name__ = isolated.__qualname__ = name
    isolated.__doc__ = getattr(fn, "__doc__", None)
    isolated.__wrapped__ = fn
    isolated.failure_stats = guard.stats
    isolated.failed_rows = lambda: list(guard.failed_rows)
    return isolated
