"""Tools the policy can call during a rollout. The built-in one runs Python in the sandbox.

A tool is a named callable ``(arguments: dict) -> str``; whatever it returns is what the policy
reads next. Failures the policy caused (a bad argument, a crashing program, an unknown tool) come
back as text too: a tool never raises into the engine for the policy's mistakes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from k2rl import resources
from k2rl.errors import K2RLError
from k2rl.rollouts.failures import InfrastructureError
from k2rl.rollouts.tool_calls import ToolCall

Tool = Callable[[dict], str]
_TOOL_IDS = itertools.count()


class PythonTool:
    """``python(code)``: run ``code`` in a sandbox, answer with its stdout (and the tail of stderr if it failed).

    A ``sandbox_error`` (the sandbox itself failed) raises :class:`InfrastructureError`: the rollout
    then has no reward and no loss, instead of the policy reading an error it did not cause.

    Each tool has its own sandbox, started on its first call and registered in :mod:`k2rl.resources`:
    :meth:`close` or ``resources.close_all()`` stops it, and a later call starts a fresh one.
    """

    name = "python"

    def __init__(self, backend: str = "local", timeout_s: float = 5.0, max_chars: int = 400, workers: int | None = None,
                 sandbox_options: dict | None = None):
        self.backend, self.timeout_s, self.max_chars, self.workers = backend, timeout_s, max_chars, workers
        self.sandbox_options = dict(sandbox_options or {})  # e.g. a remote sandbox's endpoints
        self._key = (__name__, self.name, next(_TOOL_IDS))  # this tool's own sandbox

    def _get_sandbox(self):
        from k2rl.sandboxes import shared_sandbox

        return shared_sandbox(self._key, self.backend, self.workers, **self.sandbox_options)

    def __call__(self, arguments: dict) -> str:
        code = arguments.get("code")
        if not isinstance(code, str):
            return "error: python takes one argument, code (a string of Python source)"
        from k2rl.sandboxes.tool_run import run_program
        from k2rl.sandboxes.verdict import Status

        run = run_program(self._get_sandbox(), code, timeout_s=self.timeout_s)
        if run.status == Status.SANDBOX_ERROR:  # the sandbox's failure, not the program's: no answer to read
            raise InfrastructureError(f"python: sandbox_error: {(run.stderr.strip().splitlines() or ['no detail'])[-1]}")
        if run.status == Status.OK:
            text = run.stdout
        elif run.status == Status.TIMEOUT:
            text = f"{run.stdout}error: the program exceeded its {self.timeout_s:g}s time limit"
        else:
            lines = run.stderr.strip().splitlines()
            text = f"{run.stdout}error ({run.status}): {lines[-1] if lines else 'no message'}"
        return _clip(text, self.max_chars)

    def close(self) -> None:
        resources.close(self._key)


def _clip(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 15] + "\n...[truncated]"


BUILTIN_TOOLS = {"python": PythonTool}


def check_tool_names(names: list[str]) -> None:
    """Every name in a recipe's ``rollout.tools`` is a tool k2rl has."""
    unknown = [n for n in names if n not in BUILTIN_TOOLS]
    if unknown:
        raise K2RLError(f"rollout.tools: unknown tool(s) {unknown} (known: {sorted(BUILTIN_TOOLS)})")


def build_tools(names: list[str], **python_options) -> dict[str, Tool]:
    """Tools by name for a recipe's ``rollout.tools`` list."""
    check_tool_names(names)
    return {name: BUILTIN_TOOLS[name](**python_options) for name in names}


def execute(call: ToolCall, tools: dict[str, Tool]) -> str:
    """The text the policy reads back for ``call``: the tool's answer, or a one-line error."""
    if call.error is not None:
        return f"error: {call.error}"
    if call.name not in tools:
        return f"error: unknown tool {call.name!r} (available: {', '.join(sorted(tools)) or 'none'})"
    try:
        return tools[call.name](call.arguments or {})
    except InfrastructureError:
        raise  # not the policy's doing: the engine ends the rollout unscored
    except Exception as exc:  # noqa: BLE001 - a tool's own bug must not end a training run
        return f"error: tool {call.name} failed: {type(exc).__name__}: {str(exc)[:200]}"
