"""One vocabulary of statuses: every status the harness produces is in it, nothing outside it is accepted
from the wire, and the package code names statuses only through it."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from k2rl.sandboxes import session
from k2rl.sandboxes.verdict import INFRA_STATUSES, VERDICT_STATUSES, Status, Verdict

ROOT = Path(__file__).resolve().parents[2]
# One program per status a harness can report, each through a real local sandbox.
PRODUCERS = {
    Status.PASSED: ("tests", "def f():\n    return 1\n", "assert f() == 1\n"),
    Status.FAILED: ("tests", "def f():\n    return 1\n", "assert f() == 2\n"),
    Status.ERROR: ("tests", "def f(:\n", "assert True\n"),
    Status.TIMEOUT: ("tests", "def f():\n    while True:\n        pass\n", "f()\n"),
    Status.MEMORY: ("tests", "def f():\n    return len(bytearray(1 << 34))\n", "assert f() > 0\n"),
    Status.CRASHED: ("io", "raise SystemExit(3)\n", ""),
    Status.NOT_PLAIN: ("tests", "class C:\n    pass\ndef f():\n    return C()\n", "f()\n"),
    Status.UNSUPPORTED: ("tests", "class Box:\n    pass\n", "assert Box() is not None\n"),
}


def test_every_status_the_harness_produces_is_in_the_vocabulary():
    from k2rl.sandboxes import get_sandbox

    seen = {}
    with get_sandbox("local", workers=1) as sandbox:
        for expected, (mode, program, tests) in PRODUCERS.items():
            if mode == "io":
                verdict = sandbox.run_io(program, [("", tests)], timeout_s=1.0)
            else:
                verdict = sandbox.run_tests(program, tests, timeout_s=1.0)
            seen[expected] = verdict.status
            assert type(verdict.status) is Status and verdict.status == expected.value, verdict
        sandbox._slots[0].proc.kill()  # a dead harness: the one infrastructure status
        sandbox._slots[0].proc.wait()
        lost = sandbox.run_tests("def f():\n    return 1\n", "assert f() == 1\n")
    assert lost.status is Status.SANDBOX_ERROR and lost.infrastructure_failure
    assert set(seen) | {lost.status} == VERDICT_STATUSES


def test_the_vocabulary_is_str_valued_and_crosses_as_plain_strings():
    assert Status.TIMEOUT == "timeout" and f"{Status.TIMEOUT:<8}|" == "timeout |" and str(Status.OK) == "ok"
    assert json.dumps({"status": Status.MEMORY}) == '{"status": "memory"}'
    assert INFRA_STATUSES == {Status.SANDBOX_ERROR} and Status.OK not in VERDICT_STATUSES
    aborts = [cls for cls in vars(session).values() if isinstance(cls, type) and issubclass(cls, session.Abort)]
    assert len(aborts) >= 6 and all(cls.status in VERDICT_STATUSES for cls in aborts)


def test_harness_replies_carry_plain_string_statuses():
    from k2rl.sandboxes.harness import _verdict

    reply = _verdict(Status.FAILED, "x")
    assert type(reply["status"]) is str and reply["status"] == "failed" and reply["passed"] is False
    with pytest.raises(ValueError):
        _verdict("forged")


@pytest.mark.parametrize("status", sorted(s.value for s in VERDICT_STATUSES))
def test_known_statuses_are_read_from_the_wire(status):
    verdict = Verdict.from_dict({"passed": True, "status": status, "cases": [1, 1]})
    assert verdict.status is Status(status) and verdict.passed == (status == "passed")


@pytest.mark.parametrize("status", ["pwned", "PASSED", "ok", "", None, 1])
def test_an_unknown_status_is_rejected_where_verdicts_are_built_from_wire_data(status):
    with pytest.raises(ValueError):
        Verdict.from_dict({"passed": True, "status": status})
    with pytest.raises(ValueError):
        Verdict(True, status)


def test_a_harness_reply_outside_the_vocabulary_is_never_a_pass():
    from k2rl.sandboxes.pool import _Slot

    class Forging(_Slot):
        def __init__(self):  # no process: only the reply matters
            pass

        def _send(self, obj):
            pass

        def _recv(self, deadline):
            return {"passed": True, "status": "definitely_passed"}

    assert Forging().run({}, 1.0) is None  # the pool replaces such a harness and reports sandbox_error


def _package_files() -> list[Path]:
    files = [p for p in (ROOT / "sandboxes").glob("*.py") if p.name not in ("verdict.py", "wire.py", "zygote.py")]
    return files + [ROOT / "rewards" / "unit_tests.py", *(ROOT / "rollouts").glob("*.py")]


def test_package_code_names_statuses_only_through_the_vocabulary():
    """No bare status literal is compared with, assigned to or passed as a status."""
    values = {s.value for s in Status}
    offenders = []
    for path in _package_files():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            candidates = []
            if isinstance(node, ast.Compare) and any(_mentions_status(n) for n in [node.left, *node.comparators]):
                candidates = [node.left, *node.comparators]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(_mentions_status(t) for t in targets):
                    candidates = [node.value]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("_verdict", "Verdict", "ProgramRun"):
                candidates = list(node.args[:2]) + [k.value for k in node.keywords if k.arg == "status"]
            for candidate in filter(None, candidates):  # an annotation without a value has none
                for sub in ast.walk(candidate):
                    if isinstance(sub, ast.Constant) and sub.value in values:
                        offenders.append(f"{path.relative_to(ROOT)}:{sub.lineno}: {sub.value!r}")
    assert not offenders, offenders


def _mentions_status(node) -> bool:
    return any((isinstance(n, ast.Name) and n.id == "status") or (isinstance(n, ast.Attribute) and n.attr == "status")
               or (isinstance(n, ast.Constant) and n.value == "status") for n in ast.walk(node))


def test_every_status_named_in_package_code_exists():
    names = {s.name for s in Status}
    used = set()
    for path in _package_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Status":
                used.add(node.attr)
    assert used and used <= names, used - names
