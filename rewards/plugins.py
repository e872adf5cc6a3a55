"""Third-party rewards declared through the ``k2rl.rewards`` entry-point group.

A reward package declares, in its own ``pyproject.toml``::

    [project.entry-points."k2rl.rewards"]
    my_verifier = "my_package.rewards:my_verifier"

The entry-point name becomes the reward's name in recipes. The target may also be a module whose
import registers rewards with ``@register_reward`` (``my_package.rewards``); then the names are
whatever it registers. Plugins load lazily — only when rewards are listed or a name is not a
built-in — so a slow or broken third-party package never costs anything to runs that do not use it.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

from k2rl.errors import K2RLError

GROUP = "k2rl.rewards"

_loaded: dict[str, str] = {}  # entry-point name -> "distribution (value)" for listings


def plugin_entry_points() -> list[EntryPoint]:
    """Entry points in the ``k2rl.rewards`` group of every installed distribution."""
    return sorted(entry_points(group=GROUP), key=lambda ep: ep.name)


def describe(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    source = f"{dist.name} {dist.version}" if dist is not None else "unknown distribution"
    return f"{source} ({ep.value})"


def load_plugin(ep: EntryPoint, register: Callable[[str, Callable, str], None]) -> None:
    """Import one plugin; a module registers its rewards as it is imported, a function is handed to
    ``register(name, function, where it came from)``. A broken plugin is a K2RLError naming it."""
    if ep.name in _loaded:
        return
    try:
        target = ep.load()
    except Exception as exc:  # noqa: BLE001  (any import-time failure belongs to the plugin)
        raise K2RLError(
            f"reward plugin {ep.name!r} from {describe(ep)} failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    if isinstance(target, types.ModuleType):
        pass  # importing it ran its @register_reward decorators
    elif callable(target):
        register(ep.name, target, describe(ep))
    else:
        raise K2RLError(
            f"reward plugin {ep.name!r} from {describe(ep)} points at a {type(target).__name__}, "
            "not a reward function or a module"
        )
    _loaded[ep.name] = describe(ep)


def load_plugins(register: Callable[[str, Callable, str], None], name: str | None = None) -> None:
    """Load the plugin called ``name`` (if any), or every plugin when ``name`` is None."""
    for ep in plugin_entry_points():
        if name is None or ep.name == name:
            load_plugin(ep, register)


def plugin_sources() -> dict[str, str]:
    """For loaded plugins: entry-point name -> where it came from."""
    return dict(_loaded)
