"""The trusted harness: owns one sandbox and decides verdicts where the candidate cannot reach.

One harness process per pool slot (``python -m k2rl.sandboxes.harness``), started by
:class:`k2rl.sandboxes.pool.Sandbox`. It starts its sandbox (bubblewrap or a container) once and
keeps it warm, and runs each job's tests in a fresh namespace under a SIGALRM watchdog.

Why verdicts cannot be forged: the tests run *here*, in a process outside the sandbox's namespaces,
with names from the program replaced by proxies. Calling a proxy sends plain data to the candidate
and gets plain data back (see :mod:`k2rl.sandboxes.wire`); the expected values never leave this
process, and nothing the candidate does -- exiting early, patching its own builtins, printing
"PASSED", returning objects with a forged ``__eq__`` -- is evidence here. A verdict is "passed" only
when the test source ran to its end, no call was cut short (timeout, death, a non-plain result),
and the program loaded. Exit codes and output are never read as success.
"""

from __future__ import annotations

import ast
import builtins
import functools
import gc
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time

from k2rl.sandboxes.session import (
    GRACE_S,
    Abort,
    Channel,
    Opaque,
    ProgramTimeout,
    RemoteFunction,
    SandboxLost,
    Session,
)
from k2rl.sandboxes.verdict import Status, verdict_status
from k2rl.sandboxes.wire import READ_SIZE, FrameReader, load_value, pack_frame

STARTUP_S = 120.0  # a container can take a while to start on a loaded machine


def _check_never_called(tree: ast.Module) -> bool:
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


def _verdict(status: Status, detail: str = "", done: dict | None = None, start: float = 0.0) -> dict:
    """The reply to the pool: plain data, the status as its string value."""
    status = verdict_status(status)
    done = done or {}
    return {"passed": status == Status.PASSED, "status": status.value, "detail": detail[:2000],
            "stdout": str(done.get("stdout", ""))[-8192:], "stderr": str(done.get("stderr", ""))[-8192:],
            "duration_s": time.monotonic() - start}


@functools.lru_cache(maxsize=1024)
def compile_tests(source: str) -> list[tuple[object, bool, str]]:
    """``[(code, is_case, source line)]`` per top-level statement; raises ValueError for tests that cannot run.

    A *case* is a top-level ``assert`` or a top-level call such as ``check(candidate)``; other
    statements (imports, definitions, loops) are setup. Cached because a training batch scores many
    completions against the same tests.
    """
    try:
        tree = ast.parse(source, "tests.py")
    except (SyntaxError, ValueError) as exc:
        raise ValueError(f"the tests do not compile: {exc}") from None
    if _check_never_called(tree):
        raise ValueError("the tests define check() but never call it (append check(<entry_point>))")
    statements = []
    lines = source.splitlines()
    for node in tree.body:
        is_case = isinstance(node, ast.Assert) or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call))
        text = lines[node.lineno - 1].strip()[:200] if node.lineno <= len(lines) else ""
        statements.append((compile(ast.Module([node], []), "tests.py", "exec"), is_case, f"line {node.lineno}: {text}"))
    return statements


def _namespace(session: Session, first: dict) -> dict:
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


def run_tests_job(channel: Channel, job: dict) -> dict:
    start = time.monotonic()
    try:
        statements = compile_tests(job["tests"])
    except ValueError as exc:
        return _verdict(Status.ERROR, str(exc), start=start)
    total = max(1, sum(1 for _, is_case, _ in statements if is_case))
    passed_cases = 0
    session = Session(channel, start + job["timeout"])
    status, detail = Status.PASSED, ""
    try:
        session.start({"op": "run", "mode": "tests", "program": job["program"], "timeout": job["timeout"],
                       "limits": job["limits"]})
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
        return {**_verdict(exc.status if status == Status.PASSED else status, detail or str(exc), start=start),
                "clean": False, "cases": [0, total]}
    if status != Status.PASSED and session.memory:
        status = Status.MEMORY
    if done.get("timeout") and status != Status.PASSED:
        status, detail = Status.TIMEOUT, "the program exceeded its time limit"
    if status != Status.PASSED and passed_cases >= total:
        passed_cases = total - 1
    return {**_verdict(status, detail, done, start), "clean": True, "cases": [passed_cases, total]}


def _same_output(got: str, expected: str) -> bool:
    def lines(text: str) -> list[str]:
        out = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
        while out and not out[-1]:
            out.pop()
        return out
    return lines(got) == lines(expected)


def run_io_job(channel: Channel, job: dict) -> dict:
    start = time.monotonic()
    done: dict = {}
    status, detail = Status.PASSED, ""
    for index, (stdin, expected) in enumerate(job["cases"]):
        channel.send(b"Z", {"op": "run", "mode": "io", "program": job["program"], "stdin": stdin,
                            "timeout": job["timeout"], "limits": job["limits"]})
        deadline = time.monotonic() + job["timeout"] + GRACE_S
        done = {}
        while done.get("ev") != "done":
            kind, body = channel.recv(deadline)
            event = json.loads(body) if kind == b"Z" else {}
            done = event if type(event) is dict else {}
        if done.get("timeout"):
            status, detail = Status.TIMEOUT, f"case {index}: the program exceeded its time limit"
        elif done.get("signal") is not None or done.get("exit") not in (0, None):
            status = Status.CRASHED
            detail = f"case {index}: the program ended with exit={done.get('exit')}, signal={done.get('signal')}"
        elif not _same_output(str(done.get("stdout", "")), expected):
            status, detail = Status.FAILED, f"case {index}: wrong output"
        if status != Status.PASSED:
            break
    if "MemoryError" in str(done.get("stderr", "")) and status != Status.PASSED:
        status = Status.MEMORY
    return {**_verdict(status, detail, done, start), "clean": True}


# ---------------------------------------------------------------- the harness process

def _start_sandbox(config: dict):
    """``(channel, handle)`` of a fresh sandbox whose zygote has said it is ready."""
    if config["backend"] == "docker":
        from k2rl.sandboxes.docker_backend import start_container

        handle, sock = start_container(config)
        channel = Channel(sock.fileno(), sock.fileno(), docker=True)
        handle._k2rl_sock = sock  # keep the socket object (and its fd) alive
    else:
        from k2rl.sandboxes.local import bwrap_command

        argv, kwargs = bwrap_command(config["limits"]["tmp_mb"])
        ours, theirs = socket.socketpair()  # a Unix socket, so the zygote can pass descriptors
        handle = subprocess.Popen(argv, stdin=theirs, stdout=theirs, stderr=subprocess.DEVNULL, **kwargs)
        theirs.close()
        handle._k2rl_sock = ours
        channel = Channel(ours.fileno(), ours.fileno(), sock=ours)
    kind, body = channel.recv(time.monotonic() + STARTUP_S)
    hello = json.loads(body)
    if kind != b"Z" or hello.get("ev") != "ready":
        raise SandboxLost(f"the sandbox did not start: {body[:200]!r}")
    return channel, handle


def _stop_sandbox(config: dict, handle) -> None:
    if handle is None:
        return
    if config["backend"] == "docker":
        from k2rl.sandboxes.docker_backend import stop_container

        stop_container(handle)
    else:
        # Closing the channel makes the zygote kill its namespace and exit, so bubblewrap exits too
        # and every process's CPU time is accounted to us; a wedged sandbox is killed instead.
        handle._k2rl_sock.close()
        try:
            handle.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            handle.kill()
            handle.wait()


class _Watchdog(ProgramTimeout):
    """Raised by SIGALRM when a job overruns even its grace period (e.g. a test that loops by itself)."""


def _alarm(*_) -> None:
    raise _Watchdog()


def _run_job(channel: Channel, job: dict) -> dict:
    """One job, run in this process with a watchdog.

    The tests run here rather than in a fork per job: that would add a fork and its teardown to
    every verdict, and the tests are trusted dataset code. What the candidate controls -- plain
    data returned by calls -- cannot outlive the job's namespace.
    """
    cases = len(job.get("cases") or [None])
    signal.setitimer(signal.ITIMER_REAL, job["timeout"] * cases + GRACE_S * (1 + cases))
    try:
        return (run_io_job if job["mode"] == "io" else run_tests_job)(channel, job)
    except _Watchdog:
        return {**_verdict(Status.TIMEOUT, "the run exceeded its time limit (harness watchdog)"), "clean": False}
    except Abort as exc:
        return {**_verdict(exc.status, str(exc)), "clean": False}
    except BaseException as exc:  # noqa: BLE001 - a harness bug must still produce a verdict
        return {**_verdict(Status.SANDBOX_ERROR, f"harness failure: {type(exc).__name__}: {exc}"), "clean": False}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _read_frame(fd: int, reader: FrameReader, pending: list):
    while not pending:
        data = os.read(fd, READ_SIZE)
        if not data:
            return None
        pending.extend(reader.feed(data))
    return json.loads(pending.pop(0)[1])


def _write_frame(fd: int, obj) -> None:
    data = pack_frame(b"H", json.dumps(obj).encode())
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the pool stops us by closing stdin
    signal.signal(signal.SIGALRM, _alarm)
    # The protocol moves to private fds; 0/1/2 become /dev/null so prints in tests go nowhere.
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    memory = 4096 << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    reader, pending = FrameReader(), []
    config = _read_frame(proto_in, reader, pending)
    if config.get("cpu") is not None:  # inherited by the sandbox: see Sandbox's pinning note
        try:
            os.sched_setaffinity(0, {config["cpu"]})
        except (OSError, ValueError):
            pass
    from k2rl.sandboxes.cgroups import OomKills, confine, release

    groups = []
    if config["backend"] == "local":  # Docker applies the same limits to its containers
        groups = confine(config["limits"]["sandbox_memory_mb"], config["limits"]["pids"])
    oom = OomKills(groups)
    try:
        _serve(config, proto_in, proto_out, reader, pending, oom)
    finally:
        oom.close()
        if groups:
            release(groups)


def _serve(config: dict, proto_in: int, proto_out: int, reader: FrameReader, pending: list, oom) -> None:
    channel = handle = None
    try:
        channel, handle = _start_sandbox(config)
    except BaseException as exc:  # noqa: BLE001 - reported to the pool as one line
        _write_frame(proto_out, {"error": f"{type(exc).__name__}: {exc}"})
        return
    # Everything so far lives as long as we do: keep it out of the collector's scans for good.
    gc.freeze()
    _write_frame(proto_out, {"ready": True})
    try:
        while True:
            job = _read_frame(proto_in, reader, pending)
            if job is None:
                return
            if channel is None:
                try:
                    channel, handle = _start_sandbox(config)
                except BaseException as exc:  # noqa: BLE001
                    _write_frame(proto_out, _verdict(Status.SANDBOX_ERROR, f"could not restart the sandbox: {exc}"))
                    continue
            kills = oom.count()
            verdict = _run_job(channel, {**job, "limits": config["limits"]})
            if verdict["status"] not in (Status.PASSED, Status.SANDBOX_ERROR) and oom.count() > kills:
                verdict["status"] = Status.MEMORY.value  # the sandbox's cgroup ran out and the kernel killed in it
            if not verdict.pop("clean", False):
                _stop_sandbox(config, handle)
                channel = handle = None
            _write_frame(proto_out, verdict)
    finally:
        _stop_sandbox(config, handle)


if __name__ == "__main__":
    sys.exit(main())
