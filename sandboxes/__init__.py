"""Sandboxes: run untrusted code and decide verdicts. Must not import torch or transformers.

    from k2rl.sandboxes import get_sandbox
    sb = get_sandbox("local")                  # or "docker", or "remote" (endpoints=[...], token=...)
    v = sb.run_tests(program, tests, timeout_s=10.0)
    v.passed, v.status, v.stdout, v.stderr, v.duration_s   # status: a Status (a str), see .verdict
    sb.run_tests_many([(program, tests), ...])   # concurrent, input order
    sb.run_io(program, [(stdin, expected_stdout), ...])

How it fits together (one pool slot; ``workers`` slots run side by side)::

    pool (this process) --pipe--> harness process (trusted: runs no job code, relays, checks verdicts)
                                   |                                   |
                                   v                                   v
             zygote, PID 1 of the candidate's sandbox      zygote, PID 1 of the judge's sandbox
                                   | fork per job                      | fork per job
                                   v                                   v
             candidate process (runs the program)  <-plain data->  judge process (runs the tests)

* :mod:`.wire` -- frames and the plain-data encoding, the only thing that crosses the boundary.
* :mod:`.harness` -- the trusted supervisor; :mod:`.judge`, :mod:`.session` -- the tests' side, in a
  sandbox of its own; why a verdict cannot be forged, and why the tests cannot reach the host.
* :mod:`.zygote` -- the warm process inside the sandbox; why it survives its candidates.
* :mod:`.local`, :mod:`.cgroups`, :mod:`.runtime` -- the bubblewrap backend and its limits.
* :mod:`.docker_backend` -- the Docker backend and its offline image (``k2rl sandbox build-image``).
* :mod:`.pool` -- the public :class:`~.pool.Sandbox`.
* :mod:`.remote`, :mod:`.endpoints` -- the ``remote`` backend: the same contract, verdicts from
  ``k2rl sandbox serve`` servers (:mod:`.serve`, :mod:`.service`, :mod:`.service_protocol`).
"""

from __future__ import annotations

from collections.abc import Hashable

from k2rl import resources
from k2rl.errors import K2RLError
from k2rl.sandboxes.verdict import Status, Verdict

BACKENDS = ("local", "docker", "remote")


def get_sandbox(backend: str = "local", **options):
    """A :class:`~k2rl.sandboxes.pool.Sandbox` for ``backend`` with ``options`` (see its docstring);
    for ``remote`` a :class:`~k2rl.sandboxes.remote.RemoteSandbox` with the same public contract."""
    if backend not in BACKENDS:
        raise K2RLError(f"unknown sandbox backend {backend!r} (known: {', '.join(BACKENDS)})")
    if backend == "remote":
        from k2rl.sandboxes.remote import RemoteSandbox

        return RemoteSandbox(**options)
    from k2rl.sandboxes.pool import Sandbox

    if backend == "local":
        from k2rl.sandboxes.local import bwrap_binary

        bwrap_binary()  # fail early with a clear message
    return Sandbox(backend, **options)


def shared_sandbox(key: Hashable, backend: str = "local", workers: int | None = None, **options):
    """The sandbox registered under ``key`` in :mod:`k2rl.resources`, made on first use with these
    settings (so a key should name them); ``resources.close(key)`` or ``close_all()`` stops it and the
    next call makes a fresh one."""
    return resources.shared(key, lambda: get_sandbox(backend, **({"workers": workers} if workers else {}), **options))


__all__ = ["BACKENDS", "Status", "Verdict", "get_sandbox", "shared_sandbox"]
