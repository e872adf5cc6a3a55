"""Reward registry: names for reward functions, nothing more.

A reward in k2rl is any callable with TRL's reward signature::

    reward(prompts, completions, completion_ids=None, **columns) -> list[float | None]

Registering adds a *name* so a YAML recipe can refer to it; it never adds a calling convention.
Options given in the recipe are bound as keyword arguments, so a registered function sees them next
to the dataset columns.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from k2rl.errors import K2RLError
from k2rl.rewards.import_path import check_reward_signature, is_import_path, load_import_path
from k2rl.rewards.plugins import load_plugins

RewardFunc = Callable[..., list]

_REGISTRY: dict[str, RewardFunc] = {}
# Modules of k2rl.rewards that register the built-in rewards (imported on first lookup).
BUILTIN_MODULES = ("answer", "budget", "environment", "format", "length_k15", "math", "probe", "reasoning_gym",
                   "rubric", "unit_tests", "verifiers")
_builtins_loaded = False


def _ensure_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(f"k2rl.rewards.{module}")


def register_reward(name: str) -> Callable[[RewardFunc], RewardFunc]:
    """Decorator: make ``fn`` available to recipes as ``name``."""

    def decorate(fn: RewardFunc) -> RewardFunc:
        if getattr(fn, "__module__", "").removeprefix("k2rl.rewards.") not in BUILTIN_MODULES:
            _ensure_builtins()  # a clash with a built-in is found whichever is registered first
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise K2RLError(f"reward name {name!r} is already registered by {_REGISTRY[name].__module__}")
        _REGISTRY[name] = fn
        return fn

    return decorate


def _register_plugin(name: str, fn: RewardFunc, source: str) -> None:
    """A plugin's entry point that names a function: registered under the entry point's name."""
    existing = _REGISTRY.get(name)
    if existing is not None and existing is not fn:
        raise K2RLError(
            f"reward plugin {name!r} from {source} clashes with the reward of that name from {existing.__module__}"
        )
    check_reward_signature(fn, name, f"plugin {source}")
    register_reward(name)(fn)


_GIVEN_IN_CODE: set[str] = set()


def register_functions(funcs, label: str = "reward_funcs") -> list[str]:
    """Names for reward functions handed over in code (the Python API's ``reward_funcs``): each under its
    ``__name__``, checked like a plugin. A later call may rebind a name an earlier call gave (a notebook
    redefining its reward), never a built-in or a plugin's."""
    names = []
    for index, fn in enumerate(funcs):
        name = getattr(fn, "__name__", None)
        if not isinstance(name, str) or not name.isidentifier():
            raise K2RLError(f"{label}[{index}] needs a __name__ (a def function, or set fn.__name__)")
        check_reward_signature(fn, name, f"{label}[{index}]")
        _ensure_builtins()
        if name in _REGISTRY and _REGISTRY[name] is not fn and name not in _GIVEN_IN_CODE:
            raise K2RLError(f"{label}[{index}] is named {name!r}, like the reward from {_REGISTRY[name].__module__}; "
                            "rename the function")
        _REGISTRY[name] = fn
        _GIVEN_IN_CODE.add(name)
        names.append(name)
    return names


def registered_rewards() -> dict[str, RewardFunc]:
    """Rewards registered so far by name (built-ins included; plugins not loaded)."""
    _ensure_builtins()
    return dict(_REGISTRY)


def available_rewards() -> dict[str, RewardFunc]:
    """Every reward a recipe can name: built-ins, decorated functions and all entry-point plugins."""
    _ensure_builtins()
    load_plugins(_register_plugin)
    return dict(_REGISTRY)


def reward_options(fn: RewardFunc) -> list[str] | None:
    """Names a recipe may set as options for ``fn``; None when ``fn``'s signature cannot be read."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    reserved = {"prompts", "completions", "completion_ids"}
    return [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in reserved
    ]


def resolve_reward(name: str) -> RewardFunc:
    """The function behind ``name``: an import path (``module:fn``, ``./file.py:fn``), a registered or
    built-in name, or an entry-point plugin; an unknown name is a K2RLError listing the known ones."""
    if is_import_path(name):
        return load_import_path(name)
    _ensure_builtins()
    if name not in _REGISTRY:
        load_plugins(_register_plugin, name)
        if name not in _REGISTRY:
            load_plugins(_register_plugin)
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise K2RLError(f"unknown reward {name!r} (known rewards: {known}; or an import path, "
                        "module:function or ./file.py:function)")
    return _REGISTRY[name]


def required_columns(fn: RewardFunc, options: dict | None = None) -> list[str]:
    """Dataset columns ``fn`` declares it needs: parameters with no default that no option binds
    (``def regex_answer(prompts, completions, pattern, **kwargs)`` needs a ``pattern`` column)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    reserved = {"prompts", "completions", "completion_ids"}
    return [
        p.name for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty
        and p.name not in reserved and p.name not in (options or {})
    ]


def get_reward(name: str, **options: Any) -> RewardFunc:
    """The reward named ``name`` (see :func:`resolve_reward`) with ``options`` bound as keyword arguments.

    Names not registered yet are looked up among entry-point plugins (the plugin of that name first,
    then all of them, since a plugin module may register several names). Options must be named
    parameters of the reward, so a typo in a recipe fails here rather than vanishing into
    ``**kwargs``. The result keeps a ``__name__`` (TRL uses it to label logged metrics).
    """
    fn = resolve_reward(name)
    if not options:
        return fn
    accepted = reward_options(fn)
    if accepted is not None:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise K2RLError(
                f"reward {name!r} has no option(s) {unknown} (its options: {', '.join(accepted) or 'none'})"
            )
    bound = functools.partial(fn, **options)
    functools.update_wrapper(bound, fn)
    bound.__name__ = name
    return bound


def verifier_outcomes(verifier: str, verifier_options, prompts, completions, columns: dict) -> list[bool | None]:
    """Which completions the reward named ``verifier`` passes (score >= 1; None where it has no opinion)."""
    scores = get_reward(verifier, **(verifier_options or {}))(prompts=prompts, completions=completions, **columns)
    return [None if s is None else float(s) >= 1.0 for s in scores]
