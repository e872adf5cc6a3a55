"""Sandboxes: run untrusted code and decide verdicts. Must not import torch or transformers.

    from k2rl.sandboxes import get_sandbox
    sb = get_sandbox("local")                  # or "docker"
    v = sb.run_tests(program, tests, timeout_s=10.0)
    v.passed, v.status, v.stdout, v.stderr, v.duration_s

See :mod:`k2rl.sandboxes.harness` for why a verdict cannot be forged by the program.
"""

from __future__ import annotations

from k2rl.errors import K2RLError
from k2rl.sandboxes.verdict import Verdict

BACKENDS = ("local", "docker")


def get_sandbox(backend: str = "local", **options):
    """A :class:`~k2rl.sandboxes.pool.Sandbox` for ``backend`` with ``options`` (see its docstring)."""
    if backend not in BACKENDS:
        raise K2RLError(f"unknown sandbox backend {backend!r} (known: {', '.join(BACKENDS)})")
    from k2rl.sandboxes.pool import Sandbox

    if backend == "local":
        from k2rl.sandboxes.local import bwrap_binary

        bwrap_binary()  # fail early with a clear message
    return Sandbox(backend, **options)


__all__ = ["BACKENDS", "Verdict", "get_sandbox"]
