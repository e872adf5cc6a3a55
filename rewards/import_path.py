"""Rewards named by import path, so trying a function needs no package and no entry point.

A recipe (or ``k2rl rewards check``/``audit``, or ``--reward`` in the Python API) may name a reward as

- ``mypkg.rewards:regex_answer`` -- an importable module and a function in it;
- ``./my_rewards.py:exact`` (or any path ending in ``.py``) -- a function in a local file, relative to
  the working directory.

The function is checked exactly as an entry-point plugin is (:func:`check_reward_signature`): it must
be callable and take the keyword arguments every reward receives.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path

from k2rl.errors import K2RLError



def is_import_path(name: str) -> bool:
    """``module:function`` or ``path.py:function`` (a registered name never contains a colon)."""
    return ":" in name


def default_label(name: str) -> str:
    """The name logs use for a reward: the function's name for an import path, else the name itself."""
    return name.rpartition(":")[2] if is_import_path(name) else name


def check_reward_signature(fn: object, name: str, source: str) -> None:
    """One K2RLError line when ``fn`` cannot be called as a reward: not callable, or unable to take
    ``prompts=``, ``completions=`` and the other keyword arguments (``**kwargs``)."""
    if not callable(fn):
        raise K2RLError(f"reward {name!r} from {source} is a {type(fn).__name__}, not a function")
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return  # a builtin or C callable: nothing to check before calling it
    if inspect.Parameter.VAR_KEYWORD not in {p.kind for p in params}:
        raise K2RLError(
            f"reward {name!r} from {source} must accept **kwargs (it is called with prompts=, completions=, "
            "completion_ids= and every dataset column by keyword)"
        )


def _module_from_file(path: Path):
    resolved = path.resolve()
    key = "k2rl_reward_file_" + hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, resolved)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(key, None)
        raise
    return module


def load_import_path(name: str) -> Callable:
    """The function ``name`` points at; a missing module, file or function is one K2RLError line."""
    where, _, attribute = name.rpartition(":")
    if not where or not attribute:
        raise K2RLError(f"reward {name!r}: an import path looks like module.path:function or ./file.py:function")
    try:
        if where.endswith(".py") or "/" in where or "\\" in where:
            path = Path(where)
            if not path.is_file():
                raise K2RLError(f"reward {name!r}: no file {path} (relative to {Path.cwd()})")
            module = _module_from_file(path)
        else:
            module = importlib.import_module(where)
    except K2RLError:
        raise
    except ModuleNotFoundError as exc:
        raise K2RLError(f"reward {name!r}: cannot import {where!r} ({exc})") from None
    except Exception as exc:  # noqa: BLE001  (an import-time failure belongs to the reward's module)
        raise K2RLError(f"reward {name!r}: importing {where} failed: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, attribute, None)
    if fn is None:
        public = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise K2RLError(f"reward {name!r}: {where} has no {attribute!r} (it has: {', '.join(public) or 'nothing callable'})")
    check_reward_signature(fn, name, where)
    return fn
