"""The verdict type every backend returns, and the one vocabulary of its statuses.

Also runs inside the tests' sandbox (after ``wire.py``'s source, see :mod:`.judge`): standard library only.
"""

import enum
from dataclasses import dataclass


class Status(str, enum.Enum):
    """How a sandbox run ended. A ``str`` subclass, so ``verdict.status == "timeout"`` holds; what
    crosses a process boundary is always the plain ``.value`` (the wire carries strings, not enums)."""

    PASSED = "passed"
    FAILED = "failed"  # the tests raised (e.g. an assertion), or a stdin/stdout case printed something else
    ERROR = "error"  # the program or the tests did not load, or the tests define check() without calling it
    TIMEOUT = "timeout"
    MEMORY = "memory"
    CRASHED = "crashed"  # the program died or broke its channel during the tests, or a stdin/stdout run ended abnormally
    NOT_PLAIN = "not_plain"  # a call returned something that is not plain data
    UNSUPPORTED = "unsupported"  # the tests use a program class/object, or pass a non-plain argument
    SANDBOX_ERROR = "sandbox_error"  # infrastructure failure, not the program's fault; rewards report None for it
    OK = "ok"  # run_program only (the rollout tool): the program ran to its end; never a verdict's status

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__  # f"{status:<10}" formats the value on every Python version


INFRA_STATUSES = frozenset({Status.SANDBOX_ERROR})
VERDICT_STATUSES = frozenset(Status) - {Status.OK}  # what a harness may report


def verdict_status(value) -> Status:
    """``value`` as a :class:`Status` a verdict may carry; ``ValueError`` for anything else."""
    status = Status(value)
    if status not in VERDICT_STATUSES:
        raise ValueError(f"{status.value!r} is not a verdict status")
    return status
STATUSES = frozenset(status.value for status in VERDICT_STATUSES)  # the plain strings a wire may carry


def safe_text(value) -> str:
    """``value`` as a str that always encodes as UTF-8.

    Why: everything a verdict says (output tails, exception text, returned strings quoted in a
    failed assert) comes from the candidate, which can put lone surrogates such as ``'\\udcff'``
    into it; one such character used to make encoding a whole service answer fail. They are kept
    visible as ``\\udcff`` escapes instead.
    """
    text = value if type(value) is str else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


@dataclass(frozen=True)
class Verdict:
    passed: bool
    status: Status  # a plain string is accepted and checked against the vocabulary
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    detail: str = ""
    cases_passed: int = 0  # top-level asserts / calls (e.g. check(f)) that ran without raising
    cases_total: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", verdict_status(self.status))
        for name in ("stdout", "stderr", "detail"):  # candidate text: always encodable (see safe_text)
            object.__setattr__(self, name, safe_text(getattr(self, name)))

    @property
    def infrastructure_failure(self) -> bool:
        """True when the sandbox, not the program, failed; such a verdict says nothing about the program."""
        return self.status in INFRA_STATUSES

    @classmethod
    def from_dict(cls, data: dict) -> "Verdict":
        """The verdict a harness sent; ``ValueError`` when its status is not in the vocabulary."""
        status = verdict_status(data.get("status", Status.SANDBOX_ERROR))
        passed = status is Status.PASSED
        return cls(passed=bool(data.get("passed")) and passed,
                   status=status, stdout=str(data.get("stdout", "")),
                   stderr=str(data.get("stderr", "")), duration_s=float(data.get("duration_s", 0.0)),
                   detail=str(data.get("detail", "")),
                   **_cases(data.get("cases"), passed))


def _cases(cases, passed: bool) -> dict:
    if isinstance(cases, list) and len(cases) == 2 and all(isinstance(x, int) for x in cases) and cases[1] > 0:
        done = max(0, min(cases[0], cases[1] if passed else cases[1] - 1))
        return {"cases_passed": done, "cases_total": cases[1]}
    return {"cases_passed": int(passed), "cases_total": 1}
