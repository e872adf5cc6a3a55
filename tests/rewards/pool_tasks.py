"""Task functions for the DeadlinePool tests; worker processes import them by name."""

import os
import time


def nap(seconds: float) -> int:
    """Sleep, then report which worker did it."""
    time.sleep(seconds)
    return os.getpid()


def die(code: int) -> None:
    os._exit(code)


def fail(message: str) -> None:
    raise ValueError(message)


def slow_start() -> None:
    """An initializer as slow as heavy imports."""
    time.sleep(1.0)


def nap_or_die(seconds: float) -> int:
    """``nap``, except that a negative duration kills the worker (a crash in the middle of a chunk)."""
    if seconds < 0:
        os._exit(3)
    return nap(seconds)


def latex_outcome(latex: str, sll_first: bool) -> str:
    """What latex2sympy makes of ``latex`` (called as math-verify calls it): ``"= "`` and the result's
    ``srepr``, or ``"! "`` and the exception; optionally through k2rl's SLL-first parsing, which
    installs itself globally, so it only ever runs in a worker process."""
    from latex2sympy2_extended.latex2sympy2 import latex2sympy
    from math_verify.grader import should_treat_as_complex
    from sympy import srepr

    from k2rl.rewards.math import sll_first_latex2sympy

    convert = sll_first_latex2sympy if sll_first else latex2sympy
    try:
        real = not should_treat_as_complex(latex)
        result = convert(latex, is_real=real, convert_degrees=False, normalization_config=None)
        return f"= {srepr(result)}"
    except Exception as exc:  # noqa: BLE001  (the failure is an outcome to compare too)
        return f"! {type(exc).__name__}: {exc}"


def latex_outcome_sll_first(latex: str) -> str:
    return latex_outcome(latex, sll_first=True)
