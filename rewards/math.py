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
  samples of one prompt (one gold) on one worker so that worker's caches serve them; they travel as
  one message, answered check by check, each check still under its own deadline.
* **SLL-first parsing.** Most of math-verify's time is its ANTLR LaTeX parser predicting in
  full-context (LL) mode. Workers parse in SLL mode first and fall back to latex2sympy's own LL parse
  on any syntax error, ANTLR's documented two-stage strategy, which yields the same parse trees
  (:func:`sll_first_latex2sympy`). Same results, less parsing time (``benchmarks/math_checker.py``).

Reward mode: the gold answer is never rewritten. A bare gold (``\\frac{3}{4}``, ``(2, 5]``) is only
given ``$…$`` delimiters so math-verify reads it as one expression; a gold that already has
delimiters or ``\\boxed{}``, or is one number with a decimal comma (``1,22``), is passed through
untouched. Comparison is asymmetric as in math-verify:
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

from k2rl import resources
from k2rl.errors import K2RLError
from k2rl.rewards.answer import completion_text, dataset_column
from k2rl.rewards.deadline_pool import OK, TIMEOUT, DeadlinePool
from k2rl.rewards.hedging import decimal_comma, hedged
from k2rl.rewards.registry import register_reward

DEFAULT_TIMEOUT_S = 5.0  # math-verify's own default per operation
DEFAULT_WORKERS = max(1, min(4, os.cpu_count() or 1))
_DELIMITERS = ("$", "\\(", "\\[", "\\boxed", "\\begin{equation", "\\begin{align")


def delimit_gold(gold: str) -> str:
    """``gold`` as math-verify should read it: unchanged if it is delimited or one number with a decimal
    comma, else wrapped in ``$…$``.

    Inside ``$…$`` LaTeX reads ``1,22`` as the set {1, 22}; math-verify's plain-text number reads it as
    1.22, as its own tests expect (gold ``1,22``, prediction ``1.22``), so such a gold stays bare.
    """
    gold = str(gold).strip()
    if decimal_comma(gold) or any(mark in gold for mark in _DELIMITERS):
        return gold
    return f"${gold}$"


# ---- worker side: runs in the checker processes only ------------------------------------------


_WORKER_READY = False
PARSE_CACHE_SIZE = 16384


class _NeedsFullContext(BaseException):
    """An SLL-mode parse hit a syntax error: start the whole conversion over in LL mode.

    A ``BaseException`` so that latex2sympy's own ``except Exception`` around nested parses cannot
    swallow it and carry on with a result LL parsing would not have given.
    """


_sll_attempt = False  # True only inside the first, SLL-mode attempt of sll_first_latex2sympy


def _gate_prediction_mode() -> None:
    """Make latex2sympy's parsers use SLL prediction while ``_sll_attempt`` is set (idempotent).

    Outside an attempt the parser is untouched, so installing this changes nothing by itself. The
    flag is process-wide: this is for the checker workers, which run one check at a time.
    """
    from antlr4.atn.PredictionMode import PredictionMode
    from antlr4.error.ErrorListener import ErrorListener
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

    create_parser = _Latex2Sympy.create_parser
    if getattr(create_parser, "_k2rl_gated", False):
        return

    class BailOut(ErrorListener):
        def syntaxError(self, recognizer, offendingSymbol, line, column, msg, e):
            raise _NeedsFullContext

    @functools.wraps(create_parser)
    def gated(self, latex_str):
        parser = create_parser(self, latex_str)
        if _sll_attempt:
            parser._interp.predictionMode = PredictionMode.SLL
            for recognizer in (parser, parser.getTokenStream().tokenSource):
                recognizer.removeErrorListeners()
                recognizer.addErrorListener(BailOut())
        return parser

    gated._k2rl_gated = True
    _Latex2Sympy.create_parser = gated


def sll_first_latex2sympy(*args, **kwargs):
    """``latex2sympy`` with ANTLR's two-stage strategy: SLL prediction first, LL only if that errs.

    Almost all of math-verify's time is latex2sympy's ANTLR parser, and most of that is full-context
    (LL) prediction, which the grammar needs for a few decisions and which ANTLR never caches. The
    ANTLR runtime documents for SLL mode: "the parser will either return a correct parse tree (i.e.
    the same parse tree that would be returned with the LL prediction mode), or it will report a
    syntax error". So a first attempt in SLL mode in which neither lexer nor parser reports an error
    (nested parses included: the grammar's top rule ends in EOF, so every token was read) yields
    the same trees, hence the same conversion, result or exception, as latex2sympy itself; on any
    reported error the attempt is dropped and latex2sympy runs again exactly as it would alone. Both
    modes share ANTLR's DFA cache, as in ANTLR's own two-stage parsing. ``tests/rewards`` compares
    the two on hundreds of answers and broken answers, and the checker's verdicts with math-verify's.
    """
    from latex2sympy2_extended.latex2sympy2 import latex2sympy

    global _sll_attempt
    _gate_prediction_mode()
    _sll_attempt = True
    try:
        return latex2sympy(*args, **kwargs)
    except _NeedsFullContext:
        pass
    finally:
        _sll_attempt = False
    return latex2sympy(*args, **kwargs)


def _prepare_worker() -> None:
    """Once per worker process: silence the timeout warning, widen math-verify's parse memo and parse
    LaTeX SLL first (:func:`sll_first_latex2sympy`).

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

    try:
        _gate_prediction_mode()
    except (ImportError, AttributeError):  # a latex2sympy without these seams: parse as it always did
        pass
    else:
        if hasattr(parser, "latex2sympy"):  # the name math-verify's parse_latex_cached calls
            parser.latex2sympy = sll_first_latex2sympy
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
                    if status == TIMEOUT:
                        self.timeouts += 1
                    else:
                        self.errors += 1
                self._cache[key] = verdicts[key]
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return [verdicts[key] for key in keys]

    def close(self) -> None:
        self.pool.close()


def get_checker(*, workers: int = DEFAULT_WORKERS, timeout_s: float = DEFAULT_TIMEOUT_S) -> MathChecker:
    """The shared checker for these settings (workers start on its first check, not here).

    Registered in :mod:`k2rl.resources`: ``resources.close_all()`` stops its workers, and the next
    call makes a fresh checker.
    """
    workers, timeout_s = int(workers), float(timeout_s)
    return resources.shared(("k2rl.rewards.math", workers, timeout_s),
                            lambda: MathChecker(workers=workers, timeout_s=timeout_s))


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
    """1.0 where the completion's final answer is mathematically equal to the gold column, else 0.0.

    A hedged answer (several candidates for a single-valued gold, :mod:`k2rl.rewards.hedging`) is 0.0.
    """
    golds = dataset_column(kwargs, column, "math")
    checker = get_checker(workers=workers, timeout_s=check_timeout_s)
    texts = [completion_text(c) for c in completions]
    rewards: list[float | None] = [None] * len(completions)  # no gold: no opinion
    for i, gold in enumerate(golds):
        if gold is not None and hedged(texts[i], gold):  # several answers offered: none committed to
            rewards[i] = 0.0
    rows = [i for i, gold in enumerate(golds) if gold is not None and rewards[i] is None]
    verdicts = checker.check_many([(texts[i], golds[i]) for i in rows])
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


math_reward.bounds_own_time = True  # per-sample limits of its own: no outer default timeout (rewards/isolation.py)
