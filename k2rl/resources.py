"""Shared resources with an explicit lifecycle: created on first use, closed at the end of a run.

Rewards and tools hold things that outlive one call -- worker pools, warm sandboxes -- and should be
shared by every call with the same settings. Each such thing is registered here under a key:

    checker = resources.shared(("k2rl.rewards.math", workers, timeout_s), lambda: MathChecker(...))
    ...
    resources.close_all()   # end of the run: every instance's close(), once; the next use starts fresh

:func:`shared` is thread-safe and calls the factory at most once per key until the instance is
closed. Factories should be cheap (start processes on first real use, not in the constructor): they
run under the registry's lock. Standard library only, so rewards, rollouts and sandboxes can use it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import TypeVar

T = TypeVar("T")

_instances: dict[Hashable, object] = {}  # in creation order
_lock = threading.RLock()  # reentrant: a factory may itself ask for a shared resource


def shared(key: Hashable, factory: Callable[[], T]) -> T:
    """The one instance for ``key``, made by ``factory()`` on first use; it must have a ``close()``."""
    with _lock:
        if key not in _instances:
            instance = factory()
            if not callable(getattr(instance, "close", None)):
                raise TypeError(f"shared resource {key!r} has no close() method: {instance!r}")
            _instances[key] = instance
        return _instances[key]  # type: ignore[return-value]


def close(key: Hashable) -> None:
    """Close the instance for ``key`` if there is one; the next :func:`shared` for it makes a new one."""
    with _lock:
        instance = _instances.pop(key, None)
    if instance is not None:
        instance.close()


def close_all() -> None:
    """Close every instance created so far, newest first, each exactly once.

    Every instance is closed even if one ``close()`` raises; the first error is raised afterwards.
    """
    with _lock:
        instances = list(_instances.values())
        _instances.clear()
    error: BaseException | None = None
    for instance in reversed(instances):
        try:
            instance.close()
        except BaseException as exc:  # noqa: BLE001 - closing the rest comes first
            error = error or exc
    if error is not None:
        raise error


def active() -> list[Hashable]:
    """Keys of the instances open now, in creation order."""
    with _lock:
        return list(_instances)
