"""Reward registry: names for reward functions, nothing more.

A reward in k2rl is any callable with TRL's reward signature::

    reward(prompts, completions, completion_ids=None, **columns) -> list[float | None]

Registering adds a *name* so a YAML recipe can refer to it; it never adds a calling convention.
Options given in the recipe are bound as keyword arguments, so a registered function sees them next
to the dataset columns.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from k2rl.errors import K2RLError

RewardFunc = Callable[..., list]

_REGISTRY: dict[str, RewardFunc] = {}


def register_reward(name: str) -> Callable[[RewardFunc], RewardFunc]:
    """Decorator: make ``fn`` available to recipes as ``name``."""

    def decorate(fn: RewardFunc) -> RewardFunc:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise K2RLError(f"reward name {name!r} is already registered by {_REGISTRY[name].__module__}")
        _REGISTRY[name] = fn
        return fn

    return decorate


def registered_rewards() -> dict[str, RewardFunc]:
    """All registered rewards by name (built-ins are imported by ``k2rl.rewards``)."""
    return dict(_REGISTRY)


def get_reward(name: str, **options: Any) -> RewardFunc:
    """The reward registered as ``name`` with ``options`` bound as keyword arguments.

    The result keeps a ``__name__`` (TRL uses it to label logged metrics).
    """
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise K2RLError(f"unknown reward {name!r} (known rewards: {known})")
    fn = _REGISTRY[name]
    if not options:
        return fn
    bound = functools.partial(fn, **options)
    functools.update_wrapper(bound, fn)
    bound.__name__ = name
    return bound
