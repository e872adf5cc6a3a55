"""Run one program and report what it printed: the sandbox side of the rollout engine's Python tool.

The sandbox contract is about verdicts (tests pass or not); a tool call only needs "run this and
tell me the output". :func:`run_program` gets that from ``run_io`` with a single empty-stdin case and
drops the comparison (there is no expected output), so it inherits the same isolation, limits and
backends (local bubblewrap or Docker) as every verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

from k2rl.sandboxes.verdict import Status

# run_io statuses that only say "the output differs from the (empty) expected output".
_RAN = frozenset({Status.PASSED, Status.FAILED})


@dataclass(frozen=True)
class ProgramRun:
    """What one run produced. ``status``: ``ok``, ``crashed``, ``timeout``, ``memory`` or ``sandbox_error``."""

    status: Status
    stdout: str
    stderr: str
    duration_s: float


def run_program(sandbox, program: str, timeout_s: float = 5.0) -> ProgramRun:
    """Run ``program`` as ``__main__`` with empty stdin in ``sandbox`` (from ``get_sandbox``)."""
    verdict = sandbox.run_io(program, [("", "")], timeout_s=timeout_s)
    status = Status.OK if verdict.status in _RAN else verdict.status
    return ProgramRun(status, verdict.stdout, verdict.stderr, verdict.duration_s)
