"""Environments: what a multi-turn rollout of one dataset row may do, and how it is scored.

An :class:`Environment` is the one noun a multi-turn task is written as. For each row the engine
calls :meth:`~Environment.setup` (the row's own state: a scratch database, a document, a counter),
lets the policy call the tools :meth:`~Environment.tools` hands out for that state within the turn
and call limits, scores the finished conversation with :meth:`~Environment.reward` (when the
environment has one of its own; a recipe uses it as the reward named ``environment``), and calls
:meth:`~Environment.teardown`. :meth:`~Environment.close` releases what the environment holds for
the whole run (a sandbox).

Infrastructure is not the policy's doing. A tool that cannot answer because its own machinery failed
(the sandbox is down: ``sandbox_error``) raises :class:`InfrastructureError`; so, in effect, does an
environment whose ``setup`` or ``reward`` raises. That rollout ends there, has *no* reward (``None``
for every reward of the row, never a fake 0) and no loss (its loss mask is all zeros), and the
engine counts it (``rollouts/infrastructure_failures``). A tool that fails because of what the policy
wrote (bad JSON, a crashing program) answers with an error line instead, which the policy reads and
learns from.

Built in: :class:`ToolsEnvironment` (the same tools for every row, no reward: what ``rollout.tools``
builds) and :class:`ToolUseEnvironment` (the ``tool_use`` task: the python tool and an exact-answer
reward). A recipe names an environment with ``rollout.environment`` (a built-in name or
``module:Class``) and ``rollout.environment_options``.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from typing import Any

from k2rl.errors import K2RLError
from k2rl.rollouts.failures import InfrastructureError

__all__ = ["Environment", "InfrastructureError", "ToolUseEnvironment", "ToolsEnvironment", "build_environment",
           "environment_class"]

Tool = Callable[[dict], str]
_INTEGER = re.compile(r"-?\d+")


class Environment:
    """A multi-turn task. Subclass it and override what the task needs; every method has a default.

    ``max_turns`` / ``max_tool_calls``: this environment's limits (``None``: the recipe's
    ``rollout.max_turns`` / ``rollout.max_tool_calls``).
    """

    name = "environment"
    max_turns: int | None = None
    max_tool_calls: int | None = None

    def setup(self, row: dict) -> Any:
        """The state of one rollout of ``row`` (a dataset row: ``prompt``, ``answer``, other columns)."""
        return None

    def tools(self, state) -> dict[str, Tool]:
        """Name -> tool for this rollout; a tool takes the call's arguments (a dict) and returns the text the policy reads."""
        return {}

    def reward(self, state, messages: list[dict], row: dict) -> float | None:
        """This environment's own score of the finished conversation ``messages`` (``None``: no score).

        Not overridden: the environment has no reward, and the recipe's rewards score its rollouts.
        """
        raise NotImplementedError

    def teardown(self, state) -> None:
        """Release what :meth:`setup` made for one rollout; called once the rollout is scored."""

    def close(self) -> None:
        """Release what the environment holds for the whole run."""

    @property
    def has_reward(self) -> bool:
        return type(self).reward is not Environment.reward


class ToolsEnvironment(Environment):
    """The same tools for every row, no state and no reward of its own (``rollout.tools``)."""

    name = "tools"

    def __init__(self, tools: dict[str, Tool] | None = None):
        self._tools = dict(tools or {})

    def tools(self, state) -> dict[str, Tool]:
        return self._tools

    def close(self) -> None:
        for tool in self._tools.values():
            if hasattr(tool, "close"):
                tool.close()


class ToolUseEnvironment(ToolsEnvironment):
    """The ``tool_use`` task (k2rl/data/tool_use.py): the sandboxed python tool, up to two calls, and its
    own reward -- 1.0 when the final answer is the row's product, else 0.0.

    Per-row state: the row's ``bindings`` (``{"a": 472, "b": 815}``, the names its question gives the
    factors) and the number each call printed so far (``r0``, ``r1``, ...), all defined before the
    policy's code runs. So ``print(a * b)`` and then ``print(c * r0)`` work without the policy copying
    a single digit into a call.
    """

    name = "tool_use"
    max_turns = 3
    max_tool_calls = 2

    def __init__(self, sandbox: str = "local", timeout_s: float = 5.0, sandbox_options: dict | None = None):
        from k2rl.rollouts.tools import PythonTool

        super().__init__({"python": PythonTool(backend=sandbox, timeout_s=timeout_s, sandbox_options=sandbox_options)})

    def setup(self, row: dict) -> dict:
        bindings = json.loads(row.get("bindings") or "{}")
        return {"bindings": bindings, "results": []}

    def tools(self, state) -> dict[str, Tool]:
        python = self._tools["python"]

        def bound_python(arguments: dict) -> str:
            code = arguments.get("code")
            if not isinstance(code, str):
                return python(arguments)  # the tool's own one-line error
            prelude = "".join(f"{name} = {value!r}\n" for name, value in state["bindings"].items())
            prelude += "".join(f"r{i} = {value!r}\n" for i, value in enumerate(state["results"]))
            printed = python({"code": prelude + code})
            numbers = _INTEGER.findall(printed)
            if numbers and not printed.startswith("error"):
                state["results"].append(int(numbers[-1]))
            return printed

        return {"python": bound_python}

    def reward(self, state, messages: list[dict], row: dict) -> float:
        from k2rl.rewards.answer import answers_match, completion_text

        final = [m for m in messages if m.get("role") == "assistant"][-1:]
        return float(bool(final) and answers_match(completion_text(final), row["answer"]))


BUILTIN_ENVIRONMENTS: dict[str, type[Environment]] = {"tool_use": ToolUseEnvironment}


def environment_class(name: str) -> type[Environment]:
    """The environment a recipe names: a built-in name or ``module:Class`` (a subclass of :class:`Environment`)."""
    if name in BUILTIN_ENVIRONMENTS:
        return BUILTIN_ENVIRONMENTS[name]
    if ":" not in name:
        raise K2RLError(f"rollout.environment: unknown environment {name!r} (built in: "
                        f"{', '.join(sorted(BUILTIN_ENVIRONMENTS))}; or module:Class)")
    module_name, _, attribute = name.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise K2RLError(f"rollout.environment: cannot import {name!r} ({type(exc).__name__}: {exc})") from exc
    if not (isinstance(found, type) and issubclass(found, Environment)):
        raise K2RLError(f"rollout.environment: {name!r} is not a subclass of k2rl.rollouts.environment.Environment")
    return found


def build_environment(name: str | None, options: dict | None, tools: dict[str, Tool] | None = None) -> Environment:
    """The recipe's environment: ``name`` built with ``options``, else the plain ``tools``."""
    if name is None:
        return ToolsEnvironment(tools)
    cls = environment_class(name)
    try:
        return cls(**(options or {}))
    except TypeError as exc:
        raise K2RLError(f"rollout.environment_options do not fit {name!r}: {exc}") from exc

