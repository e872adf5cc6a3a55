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
