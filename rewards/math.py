"""Math answer checking that never hangs: math-verify, run in killable worker processes.

All mathematics is math-verify's: it extracts the final answer from a full response (``\\boxed{}``
first, then "the answer is …", then the last expression), parses LaTeX or plain text into SymPy and
compares symbolically and numerically. This module adds what a training loop needs around it:

* **A deadline that works from any thread.** math-verify's own timeout is ``signal.alarm``, which
  only works on the main thread, so it is switched off in the workers and the parent kills and
  replaces a worker that overruns (:class:`~k2rl.rewards.deadline_pool.DeadlinePool`).
* **Caches.** The parent remembers verdicts of (gold, response) pairs it has seen; each worker
  remembers parsed golds (a batch repeats each gold once per sampled completion), verdicts for
  (gold, parsed answer), since many completions of one prompt reach the same answer, and keeps a
  larger LaTeX-parse memo than math-verify's own (answers recur across prompts and epochs).
* **Batching.** :meth:`MathChecker.check_many` spreads a batch over all workers, keeping the
  samples of one prompt (one gold) on one worker so that worker's caches serve them.

Reward mode: the gold answer is never rewritten. A bare gold (``\\frac{3}{4}``, ``(2, 5]``) is only
given ``$…$`` delimiters so math-verify reads it as one expression; a gold that already has
delimiters or ``\\boxed{}`` is passed through untouched. Comparison is asymmetric as in math-verify:
gold first, prediction second.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import logging
import os
import threading
from collections.abc import Sequence

from k2rl.errors import K2RLError
from k2rl.rewards.answer import completion_text, dataset_column
from k2rl.rewards.deadline_pool import OK, DeadlinePool
from k2rl.rewards.registry import register_reward

DEFAULT_TIMEOUT_S = 5.0  # math-verify's own default per operation
DEFAULT_WORKERS = max(1, min(4, os.cpu_count() or 1))
_DELIMITERS = ("$", "\\(", "\\[", "\\boxed", "\\begin{equation", "\\begin{align")


def delimit_gold(gold: str) -> str:
    """``gold`` as math-verify should read it: unchanged if it is delimited, else wrapped in ``$…$``."""
    gold = str(gold).strip()
    if any(mark in gold for mark in _DELIMITERS):
        return gold
    return f"${gold}$"


# ---- worker side: runs in the checker processes only ------------------------------------------


_WORKER_READY = False
PARSE_CACHE_SIZE = 16384


def _prepare_worker() -> None:
    """Once per worker process: silence the timeout warning and widen math-verify's parse memo.

    The workers turn math-verify's signal timeout off on purpose (the parent enforces deadlines), so
    its warning about that is noise. math-verify memoises LaTeX -> SymPy conversion, its dominant cost,
    in an ``lru_cache`` of 20 entries: enough for one prompt's samples, too small to keep answers that
    recur across prompts (small integers, common fractions) or across epochs. The same pure function
    is re-wrapped with a larger cache, only inside these worker processes; verdicts cannot change.
    """
    global _WORKER_READY
    if _WORKER_READY:
        return
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    from math_verify import parse, parser, verify

    for name in ("parse_latex_cached", "parse_expr_cached"):
        memo = getattr(parser, name, None)
        if hasattr(memo, "cache_info") and hasattr(memo, "__wrapped__"):
            setattr(parser, name, functools.lru_cache(maxsize=PARSE_CACHE_SIZE)(memo.__wrapped__))
    # load the LaTeX grammar and SymPy's lazy modules now, not inside the first check's deadline
    verify(parse("$\\frac{1}{2}$", parsing_timeout=None), parse("$0.5$", parsing_timeout=None), timeout_seconds=None)
    _WORKER_READY = True


@functools.lru_cache(maxsize=4096)
def _parsed_gold(gold: str):
    from math_verify import parse

    return parse(gold, parsing_timeout=None)


_VERDICTS: dict[tuple[str, str], bool] = {}
_MAX_VERDICTS = 65536


def _answer_key(parsed) -> str:
    """An exact text form of a parsed answer, so equal answers from different responses share a verdict."""
    from sympy import srepr

    return "\x1f".join(item if isinstance(item, str) else srepr(item) for item in parsed)


def verdict(task: tuple[str, str]) -> bool:
    """Worker entry point: is ``response`` equivalent to the (already delimited) ``gold``?"""
    from math_verify import parse, verify

    _prepare_worker()
    gold, response = task
    parsed = parse(response, parsing_timeout=None)
    key = (gold, _answer_key(parsed))
    if key not in _VERDICTS:
        if len(_VERDICTS) >= _MAX_VERDICTS:
            _VERDICTS.clear()
        _VERDICTS[key] = bool(verify(_parsed_gold(gold), parsed, timeout_seconds=None))
    return _VERDICTS[key]


# ---- parent side ----------------------------------------------------------------------------


class MathChecker:
    """Batched, cached, deadline-bounded ``verify(parse(gold), parse(response))``.

    Verdicts are ``True``/``False``, or ``None`` when a check timed out or its worker failed; a
    ``None`` is remembered too, so an adversarial pair costs its timeout only once.
    """

    def __init__(self, *, workers: int = DEFAULT_WORKERS, timeout_s: float = DEFAULT_TIMEOUT_S, cache_size: int = 65536):
        if timeout_s <= 0:
            raise K2RLError(f"math checker timeout must be positive, got {timeout_s}")
        if workers < 1:
            raise K2RLError(f"math checker needs at least one worker, got {workers}")
        self.pool = DeadlinePool(
            verdict, workers=workers, timeout_s=timeout_s, memory_limit_mb=4096, initializer=_prepare_worker
        )
        self.cache_size = cache_size
        self._cache: collections.OrderedDict[bytes, bool | None] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.timeouts = self.errors = 0

    @staticmethod
    def _key(gold: str, response: str) -> bytes:
        return hashlib.blake2b(f"{gold}\x00{response}".encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def check_many(self, pairs: Sequence[tuple[str, str]]) -> list[bool | None]:
        """Verdicts for ``(response, gold)`` pairs, in order."""
        tasks = [(delimit_gold(gold), str(response)) for response, gold in pairs]
        keys = [self._key(*task) for task in tasks]
        verdicts: dict[bytes, bool | None] = {}
        with self._lock:
            for key in keys:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    verdicts[key] = self._cache[key]
                    self.hits += 1
        todo = {key: task for key, task in zip(keys, tasks) if key not in verdicts}  # also de-duplicates
        if not todo:
            return [verdicts[key] for key in keys]
        # all samples of one prompt share a gold: keep them on one worker, whose caches then serve them
        outcomes = self.pool.map(list(todo.values()), keys=[task[0] for task in todo.values()])
        with self._lock:
            for key, (status, value) in zip(todo, outcomes):
                if status == OK:
                    verdicts[key] = bool(value)
                else:
                    verdicts[key] = None
                    if status == "timeout":
                        self.timeouts += 1
                    else:
                        self.errors += 1
                self._cache[key] = verdicts[key]
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return [verdicts[key] for key in keys]

    def close(self) -> None:
        self.pool.close()


_checkers: dict[tuple[int, float], MathChecker] = {}
_checkers_lock = threading.Lock()


def get_checker(*, workers: int = DEFAULT_WORKERS, timeout_s: float = DEFAULT_TIMEOUT_S) -> MathChecker:
    """The shared checker for these settings (workers start on its first check, not here)."""
    with _checkers_lock:
        key = (int(workers), float(timeout_s))
        if key not in _checkers:
            _checkers[key] = MathChecker(workers=key[0], timeout_s=key[1])
        return _checkers[key]


def is_equivalent(response: str, gold: str) -> bool:
    """True when the final answer in ``response`` equals ``gold`` (LaTeX or plain) per math-verify.

    A check that exceeds the timeout counts as not equivalent.
    """
    return get_checker().check_many([(response, gold)])[0] is True


@register_reward("math")
def math_reward(
    prompts,
    completions,
    completion_ids=None,
    column: str = "answer",
    check_timeout_s: float = DEFAULT_TIMEOUT_S,
    workers: int = DEFAULT_WORKERS,
    timeout_reward: float | None = 0.0,
    **kwargs,
) -> list[float | None]:
    """1.0 where the completion's final answer is mathematically equal to the gold column, else 0.0."""
    golds = dataset_column(kwargs, column, "math")
    checker = get_checker(workers=workers, timeout_s=check_timeout_s)
    rows = [i for i, gold in enumerate(golds) if gold is not None]
    verdicts = checker.check_many([(completion_text(completions[i]), golds[i]) for i in rows])
    rewards: list[float | None] = [None] * len(completions)  # no gold: no opinion
    timeouts = 0
    for i, ok in zip(rows, verdicts):
        if ok is None:
            timeouts += 1
            rewards[i] = timeout_reward
        else:
            rewards[i] = float(ok)
    log_metric = kwargs.get("log_metric")
    if callable(log_metric):
        log_metric("rewards/math/timeouts", float(timeouts))
    return rewards
