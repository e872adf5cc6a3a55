"""The verdict type every backend returns."""

from __future__ import annotations

from dataclasses import dataclass

# Statuses: "passed"; "failed" (the tests raised, e.g. an assertion); "error" (the program or the tests
# did not load, or tests define check() without calling it); "timeout"; "memory"; "crashed" (the
# program died or broke its channel during the tests, or a stdin/stdout run ended abnormally);
# "not_plain" (a call returned something that is not plain data); "unsupported" (the tests use a
# program class/object, or pass a non-plain argument); "sandbox_error" (infrastructure failure -- not
# the program's fault; rewards report None for it).
INFRA_STATUSES = frozenset({"sandbox_error"})
STATUSES = frozenset({"passed", "failed", "error", "timeout", "memory", "crashed", "not_plain", "unsupported",
                      *INFRA_STATUSES})


@dataclass(frozen=True)
class Verdict:
    passed: bool
    status: str
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    detail: str = ""
    cases_passed: int = 0  # top-level asserts / calls (e.g. check(f)) that ran without raising
    cases_total: int = 1

    @property
    def infrastructure_failure(self) -> bool:
        """True when the sandbox, not the program, failed; such a verdict says nothing about the program."""
        return self.status in INFRA_STATUSES

    @classmethod
    def from_dict(cls, data: dict) -> "Verdict":
        return cls(passed=bool(data.get("passed")) and data.get("status") == "passed",
                   status=str(data.get("status", "sandbox_error")), stdout=str(data.get("stdout", "")),
                   stderr=str(data.get("stderr", "")), duration_s=float(data.get("duration_s", 0.0)),
                   detail=str(data.get("detail", "")),
                   **_cases(data.get("cases"), data.get("status") == "passed"))


def _cases(cases, passed: bool) -> dict:
    if isinstance(cases, list) and len(cases) == 2 and all(isinstance(x, int) for x in cases) and cases[1] > 0:
        done = max(0, min(cases[0], cases[1] if passed else cases[1] - 1))
        return {"cases_passed": done, "cases_total": cases[1]}
    return {"cases_passed": int(passed), "cases_total": 1}
