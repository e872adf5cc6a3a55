"""The judge: runs a job's tests in a sandbox of its own and decides the verdict there.

Why a sandbox of its own: a job's ``tests`` are code from the request (or from a dataset), no more
trustworthy than the program. Run on the host they could read its secrets, use its network and,
as root, own it. So the tests run in a second sandbox (same isolation as the candidate's: no
network, read-only system, unprivileged uid, rlimits, a forked process per job that is killed and
whose scratch space is wiped at the end) and the host's harness only relays a few events and checks
that the verdict it gets back is in the vocabulary.

Why the candidate still cannot reach the expected values: the judge's sandbox is separate from the
candidate's (other namespaces, other processes); the two only share the candidate's socket, on which
plain data crosses (see :mod:`.wire`). The names the program defines are proxies here
(:mod:`.session`); nothing the candidate does -- exiting early, printing "PASSED", returning objects
with a forged ``__eq__`` -- is evidence. A verdict is "passed" only when the test source ran to its
end, no call was cut short (timeout, death, a non-plain result) and the program loaded.

This file runs inside the judge's sandbox after ``wire.py``'s, ``verdict.py``'s, ``session.py``'s
and ``candidate.py``'s sources and before ``zygote.py``'s, under ``python -I -S``: standard library
only, no ``from __future__``.
"""

import ast
import builtins
import functools
import json
import os
import socket
import time

try:  # outside a sandbox (imports, tests); inside, the sources named above precede this file
    from k2rl.sandboxes.session import Abort, Channel, Opaque, RemoteFunction, Session
    from k2rl.sandboxes.verdict import Status
    from k2rl.sandboxes.wire import load_value
except ImportError:  # pragma: no cover - inside the sandbox
    pass


def _check_never_called(tree) -> bool:
    defines = any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body)
    if not defines:
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "check":
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == "check":
                return False
    return True


@functools.lru_cache(maxsize=1024)
def compile_tests(source: str) -> list:
    """``[(code, is_case, source line)]`` per top-level statement; raises ValueError for tests that cannot run.

    A *case* is a top-level ``assert`` or a top-level call such as ``check(candidate)``; other
    statements (imports, definitions, loops) are setup. Called in the judge's zygote before it forks
    (compiling runs none of the tests), and cached there because a training batch scores many
    completions against the same tests.
    """
    try:
        tree = ast.parse(source, "tests.py")
        if _check_never_called(tree):
            raise ValueError("the tests define check() but never call it (append check(<entry_point>))")
        statements = []
        lines = source.splitlines()
        for node in tree.body:
            is_case = isinstance(node, ast.Assert) or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call))
            text = lines[node.lineno - 1].strip()[:200] if node.lineno <= len(lines) else ""
            statements.append((compile(ast.Module([node], []), "tests.py", "exec"), is_case,
                               f"line {node.lineno}: {text}"))
    except (SyntaxError, RecursionError, MemoryError) as exc:
        raise ValueError(f"the tests do not compile: {type(exc).__name__}: {exc}") from None
    return statements


def judge_plan(source: str):
    """The compiled tests, or the one-line reason they cannot run (a str)."""
    try:
        return compile_tests(source)
    except ValueError as exc:
        return str(exc)


def _namespace(session, first: dict) -> dict:
    """The tests' globals: the program's functions as proxies, its plain constants as copies."""
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    for name, kind in first["ready"].items():
        if type(name) is not str or not name.isidentifier():
            continue
        if kind == "function":
            namespace[name] = RemoteFunction(session, name)
        elif kind == "value" and name in first["values"]:
            try:
                namespace[name] = load_value(first["values"][name])
            except (ValueError, TypeError):
                namespace[name] = Opaque(name, "object")
        else:
            namespace[name] = Opaque(name, "class" if kind == "class" else "object")
    return namespace


def run_tests(session, statements) -> dict:
    """Run the compiled tests against the candidate behind ``session``; the verdict as plain data."""
    total = max(1, sum(1 for _, is_case, _ in statements if is_case))
    passed_cases = 0
    status, detail = Status.PASSED, ""
    try:
        first = session.candidate_message()
        if "load_error" in first:
            error = first["load_error"]
            status, detail = Status.ERROR, f"the program failed to load: {str(error[-1] if type(error) is list else error)}"
            if type(error) is list and error and error[0] == "MemoryError":
                status = Status.MEMORY
        elif type(first.get("ready")) is dict and type(first.get("values")) is dict:
            namespace = _namespace(session, first)
            for code, is_case, where in statements:
                try:
                    exec(code, namespace)
                except Abort:
                    raise
                except BaseException as exc:  # noqa: BLE001 - a failed case; later cases still run
                    if status == Status.PASSED:
                        status, detail = Status.FAILED, f"{type(exc).__name__}: {exc} (tests.py {where})"
                    if not is_case:  # setup failed: nothing after it can be trusted to mean anything
                        break
                    continue
                passed_cases += is_case
            if not any(is_case for _, is_case, _ in statements) and status == Status.PASSED:
                passed_cases = 1
        else:
            status, detail = Status.CRASHED, "the program sent a malformed greeting"
    except Abort as exc:
        status, detail = exc.status, str(exc)
    except BaseException as exc:  # noqa: BLE001 - the tests failed; say how
        status, detail = Status.FAILED, f"{type(exc).__name__}: {exc}"
    if session.broken is not None:  # an aborted call swallowed by the tests still fails the run
        if status == Status.PASSED:
            status, detail = session.broken.status, str(session.broken)
        passed_cases = 0
    try:
        done = session.finish()
    except Abort as exc:
        return {"status": (exc.status if status == Status.PASSED else status).value, "detail": detail or str(exc),
                "clean": False, "cases": [0, total]}
    if status != Status.PASSED and session.memory:
        status = Status.MEMORY
    if done.get("timeout") and status != Status.PASSED:
        status, detail = Status.TIMEOUT, "the program exceeded its time limit"
    if status != Status.PASSED and passed_cases >= total:
        passed_cases = total - 1
    return {"status": status.value, "detail": detail, "clean": True, "cases": [passed_cases, total]}


def judge_main(request: dict, plan, fds: list) -> None:
    """The judge's forked child: ``fds`` are the candidate's socket and the report socket to the harness."""
    report = socket.socket(fileno=fds[1])
    channel = Channel(report.fileno(), report.fileno(), sock=report)
    session = Session(channel, time.monotonic() + float(request.get("budget", request["timeout"])))
    session.attach(socket.socket(fileno=fds[0]))
    if isinstance(plan, str):
        verdict = {"status": Status.ERROR.value, "detail": plan, "clean": True, "cases": [0, 1]}
        try:
            session.finish()
        except Abort:
            verdict["clean"] = False
    else:
        verdict = run_tests(session, plan)
    channel.send(b"V", json.dumps(verdict).encode())
    os._exit(0)
