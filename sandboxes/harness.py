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
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time

from k2rl.sandboxes.wire import FrameError, FrameReader, NotPlain, dump_value, load_value, pack_frame

STARTUP_S = 120.0  # a container can take a while to start on a loaded machine
GRACE_S = 2.0


class Abort(BaseException):
    """A call that cannot yield a value; BaseException so ``except Exception`` in tests cannot hide it."""

    status = "failed"


class ProgramTimeout(Abort):
    status = "timeout"


class ProgramGone(Abort):
    status = "crashed"


class NotPlainResult(Abort):
    status = "not_plain"


class Unsupported(Abort):
    status = "unsupported"


class SandboxLost(Abort):
    status = "sandbox_error"


# ---------------------------------------------------------------- the channel to the sandbox

class Channel:
    """Frames to/from the zygote over pipes (bubblewrap) or a Docker attach socket (demultiplexed)."""

    def __init__(self, read_fd: int, write_fd: int, docker: bool = False, sock: socket.socket | None = None):
        self.read_fd, self.write_fd, self.docker = read_fd, write_fd, docker
        self.sock = sock  # a Unix socket to the zygote (local backend): it may pass us descriptors
        self.frames = FrameReader()
        self.pending: list = []
        self.fds: list[int] = []  # descriptors received, matched in order with "F" frames
        self._raw = bytearray()  # docker stream headers not yet parsed

    def send(self, kind: bytes, obj) -> None:
        data = pack_frame(kind, obj if isinstance(obj, bytes) else json.dumps(obj).encode())
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.write_fd, view):]
        except OSError as exc:
            raise SandboxLost(f"sandbox channel closed ({exc.strerror})") from None

    def _demux(self, data: bytes) -> bytes:
        self._raw += data
        out = bytearray()
        while len(self._raw) >= 8:
            size = int.from_bytes(self._raw[4:8], "big")
            if len(self._raw) < 8 + size:
                break
            if self._raw[0] == 1:  # stdout; stderr (2) is the zygote's own noise
                out += self._raw[8:8 + size]
            del self._raw[:8 + size]
        return bytes(out)

    def recv(self, deadline: float):
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProgramTimeout("no answer from the sandbox in time")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if not ready:
                continue
            try:
                if self.sock is not None:
                    data, fds, _flags, _addr = socket.recv_fds(self.sock, 1 << 20, 4)
                    self.fds.extend(fds)
                else:
                    data = os.read(self.read_fd, 1 << 20)
            except OSError:
                data = b""
            if not data:
                raise SandboxLost("the sandbox closed its channel")
            if self.docker:
                data = self._demux(data)
            try:
                self.pending.extend(self.frames.feed(data))
            except FrameError as exc:
                raise SandboxLost(f"protocol violation: {exc}") from None
        return self.pending.pop(0)


# ---------------------------------------------------------------- one job, in a forked child

class Session:
    """The harness's side of one program run: calls, events, and whether anything went wrong."""

    def __init__(self, channel: Channel, deadline: float):
        self.channel = channel
        self.deadline = deadline
        self.calls = 0
        self.gone: Abort | None = None
        self.broken: Abort | None = None  # first aborted call; a verdict with one never passes
        self.memory = False
        self.done: dict | None = None
        self.direct: socket.socket | None = None  # the candidate's own socket, when the zygote handed it over
        self.direct_frames = FrameReader()
        self.direct_pending: list = []

    def _event(self, event: dict) -> None:
        kind = event.get("ev") if type(event) is dict else None
        if kind == "timeout":
            self.gone = ProgramTimeout("the program exceeded its time limit")
        elif kind == "exit":
            sig, code = event.get("signal"), event.get("exit")
            self.gone = ProgramGone(f"the program ended during the tests (exit={code}, signal={sig})")
        elif kind in ("gone", "violation"):
            self.gone = ProgramGone(f"the program's channel failed ({event.get('detail', kind)})")
        elif kind == "done":
            self.done = event
        else:
            raise SandboxLost(f"unexpected sandbox event {str(event)[:100]}")

    def _direct_frame(self):
        """The next frame on the candidate's own socket, watching the zygote's channel for events."""
        while not self.direct_pending:
            if self.gone is not None:
                raise self.gone
            left = self.deadline + GRACE_S - time.monotonic()
            if left <= 0:
                raise ProgramTimeout("no answer from the program in time")
            if self.channel.pending:
                kind, body = self.channel.recv(self.deadline + GRACE_S)
                self._event(json.loads(body) if kind == b"Z" else {})
                continue
            ready, _, _ = select.select([self.direct, self.channel.read_fd], [], [], left)
            if self.direct in ready:  # before events: a reply sent just before exiting still counts
                try:
                    data = self.direct.recv(1 << 20)
                except OSError:
                    data = b""
                if not data:  # the program died or closed it: let the zygote say how, briefly
                    wait_until = time.monotonic() + 0.5
                    while self.gone is None and time.monotonic() < wait_until:
                        if self.channel.pending or select.select([self.channel.read_fd], [], [], 0.05)[0]:
                            kind, body = self.channel.recv(wait_until)
                            self._event(json.loads(body) if kind == b"Z" else {})
                    self.gone = self.gone or ProgramGone("the program closed its channel")
                    continue
                try:
                    self.direct_pending.extend(self.direct_frames.feed(data))
                except FrameError as exc:
                    self.gone = ProgramGone(f"the program's channel failed ({exc})")
            elif ready:
                kind, body = self.channel.recv(self.deadline + GRACE_S)
                self._event(json.loads(body) if kind == b"Z" else {})
        return self.direct_pending.pop(0)

    def candidate_message(self) -> dict:
        """The next frame the candidate sent, or the Abort that ended it."""
        while True:
            if self.gone is not None and not self.direct_pending:
                raise self.gone
            if self.direct is not None:
                kind, body = self._direct_frame()
            else:
                kind, body = self.channel.recv(self.deadline + GRACE_S)
            if kind == b"F":  # the zygote passed us the candidate's socket
                if not self.channel.fds:
                    raise SandboxLost("descriptor frame without a descriptor")
                self.direct = socket.socket(fileno=self.channel.fds.pop(0))
                for extra in self.channel.fds:  # never more than one per job; drop anything else
                    os.close(extra)
                self.channel.fds.clear()
                continue
            if kind == b"Z":
                self._event(json.loads(body))
                continue
            try:
                message = json.loads(body)
            except ValueError:
                raise ProgramGone("the program sent a malformed message") from None
            if type(message) is not dict:
                raise ProgramGone("the program sent a malformed message")
            return message

    def call(self, name: str, args: tuple, kwargs: dict):
        if self.broken is not None:
            raise self.broken
        try:
            try:
                payload = {"id": self.calls + 1, "call": name, "args": dump_value(args), "kwargs": dump_value(kwargs)}
            except NotPlain as exc:
                raise Unsupported(f"tests pass a non-plain argument to {name}(): {exc}") from None
            self.calls += 1
            if self.gone is not None:
                raise self.gone
            if self.direct is not None:
                try:
                    self.direct.settimeout(max(0.01, self.deadline + GRACE_S - time.monotonic()))
                    self.direct.sendall(pack_frame(b"C", json.dumps(payload).encode()))
                except OSError:
                    self.gone = self.gone or ProgramGone("the program stopped reading its channel")
                    raise self.gone from None
            else:
                self.channel.send(b"C", payload)
            message = self.candidate_message()
            if message.get("id") != self.calls:
                raise ProgramGone("the program answered out of turn")
            if "ok" in message:
                try:
                    return load_value(message["ok"])
                except (ValueError, TypeError) as exc:
                    raise NotPlainResult(f"{name}() returned malformed data: {exc}") from None
            if "unplain" in message:
                raise NotPlainResult(f"{name}() returned a value that is not plain data: {str(message['unplain'])[:200]}")
            raised = message.get("raise")
            if type(raised) is list and len(raised) == 2 and all(type(x) is str for x in raised):
                raise _remote_exception(self, *raised)
            raise ProgramGone("the program sent a malformed reply")
        except Abort as exc:
            self.broken = self.broken or exc
            raise

    def finish(self) -> dict:
        """End the run (kill the candidate's tree) and return the zygote's closing report."""
        if self.direct is not None:
            self.direct.close()
        if self.done is None:
            self.channel.send(b"Z", {"op": "end"})
        while self.done is None:
            kind, body = self.channel.recv(time.monotonic() + 10.0)
            if kind == b"Z":
                event = json.loads(body)
                if type(event) is dict and event.get("ev") in ("timeout", "exit", "gone", "violation", "done"):
                    self._event(event)
        return self.done


class RemoteError(Exception):
    """An exception raised in the program whose type is not a builtin ``Exception`` subclass."""


# Never re-raised as themselves: a StopIteration escaping into map()/all() in the tests would end an
# iteration early and could turn a failing check into a passing one.
_NOT_RERAISED = ("StopIteration", "StopAsyncIteration", "MemoryError")


def _remote_exception(session: Session, name: str, text: str) -> BaseException:
    """The host-side exception for one the program raised: a builtin type by name, else RemoteError."""
    if name == "MemoryError":
        session.memory = True
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and name not in _NOT_RERAISED:
        return cls(text)
    if name == "MemoryError":
        return RemoteError(text)
    return RemoteError(f"{name}: {text}")


class RemoteFunction:
    """Stands for one of the program's functions; calling it runs the function in the sandbox."""

    def __init__(self, session: Session, name: str):
        self._session, self.__name__ = session, name

    def __call__(self, *args, **kwargs):
        return self._session.call(self.__name__, args, kwargs)

    def __repr__(self) -> str:
        return f"<sandboxed function {self.__name__}>"


class Opaque:
    """A program object that is neither a function nor plain data (a class, an instance)."""

    def __init__(self, name: str, kind: str):
        self._name, self._kind = name, kind

    def _refuse(self, *args, **kwargs):
        raise Unsupported(f"tests use {self._kind} {self._name!r}; only functions and plain data cross the sandbox")

    __call__ = __getattr__ = __iter__ = __eq__ = __hash__ = __bool__ = _refuse


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


def _verdict(status: str, detail: str = "", done: dict | None = None, start: float = 0.0) -> dict:
    done = done or {}
    return {"passed": status == "passed", "status": status, "detail": detail[:2000],
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
        return _verdict("error", str(exc), start=start)
    total = max(1, sum(1 for _, is_case, _ in statements if is_case))
    passed_cases = 0
    session = Session(channel, start + job["timeout"])
    channel.send(b"Z", {"op": "run", "mode": "tests", "program": job["program"],
                        "timeout": job["timeout"], "limits": job["limits"]})
    status, detail = "passed", ""
    try:
        first = session.candidate_message()
        if "load_error" in first:
            error = first["load_error"]
            status, detail = "error", f"the program failed to load: {str(error[-1] if type(error) is list else error)}"
            if type(error) is list and error and error[0] == "MemoryError":
                status = "memory"
        elif type(first.get("ready")) is dict and type(first.get("values")) is dict:
            namespace = _namespace(session, first)
            for code, is_case, where in statements:
                try:
                    exec(code, namespace)
                except Abort:
                    raise
                except BaseException as exc:  # noqa: BLE001 - a failed case; later cases still run
                    if status == "passed":
                        status, detail = "failed", f"{type(exc).__name__}: {exc} (tests.py {where})"
                    if not is_case:  # setup failed: nothing after it can be trusted to mean anything
                        break
                    continue
                passed_cases += is_case
            if not any(is_case for _, is_case, _ in statements) and status == "passed":
                passed_cases = 1
        else:
            status, detail = "crashed", "the program sent a malformed greeting"
    except Abort as exc:
        status, detail = exc.status, str(exc)
    except BaseException as exc:  # noqa: BLE001 - the tests failed; say how
        status, detail = "failed", f"{type(exc).__name__}: {exc}"
    if session.broken is not None:  # an aborted call swallowed by the tests still fails the run
        if status == "passed":
            status, detail = session.broken.status, str(session.broken)
        passed_cases = 0
    try:
        done = session.finish()
    except Abort as exc:
        return {**_verdict(exc.status if status == "passed" else status, detail or str(exc), start=start),
                "clean": False, "cases": [0, total]}
    if status != "passed" and session.memory:
        status = "memory"
    if done.get("timeout") and status != "passed":
        status, detail = "timeout", "the program exceeded its time limit"
    if status != "passed" and passed_cases >= total:
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
    status, detail = "passed", ""
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
            status, detail = "timeout", f"case {index}: the program exceeded its time limit"
        elif done.get("signal") is not None or done.get("exit") not in (0, None):
            status = "crashed"
            detail = f"case {index}: the program ended with exit={done.get('exit')}, signal={done.get('signal')}"
        elif not _same_output(str(done.get("stdout", "")), expected):
            status, detail = "failed", f"case {index}: wrong output"
        if status != "passed":
            break
    if "MemoryError" in str(done.get("stderr", "")) and status != "passed":
        status = "memory"
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

    The tests run here rather than in a fork per job: a fork plus its teardown cost as much as the
    rest of a verdict, and the tests are trusted dataset code. What the candidate controls -- plain
    data returned by calls -- cannot outlive the job's namespace.
    """
    cases = len(job.get("cases") or [None])
    signal.setitimer(signal.ITIMER_REAL, job["timeout"] * cases + GRACE_S * (1 + cases))
    try:
        return (run_io_job if job["mode"] == "io" else run_tests_job)(channel, job)
    except _Watchdog:
        return {**_verdict("timeout", "the run exceeded its time limit (harness watchdog)"), "clean": False}
    except Abort as exc:
        return {**_verdict(exc.status, str(exc)), "clean": False}
    except BaseException as exc:  # noqa: BLE001 - a harness bug must still produce a verdict
        return {**_verdict("sandbox_error", f"harness failure: {type(exc).__name__}: {exc}"), "clean": False}
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _read_frame(fd: int, reader: FrameReader, pending: list):
    while not pending:
        data = os.read(fd, 1 << 20)
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
    groups = []
    if config["backend"] == "local":  # Docker applies the same limits to its containers
        from k2rl.sandboxes.cgroups import confine

        groups = confine(config["limits"]["sandbox_memory_mb"], config["limits"]["pids"])
    try:
        _serve(config, proto_in, proto_out, reader, pending, groups)
    finally:
        if groups:
            from k2rl.sandboxes.cgroups import release

            release(groups)


def _serve(config: dict, proto_in: int, proto_out: int, reader: FrameReader, pending: list, groups: list) -> None:
    from k2rl.sandboxes.cgroups import oom_kills

    channel = handle = None
    try:
        channel, handle = _start_sandbox(config)
    except BaseException as exc:  # noqa: BLE001 - reported to the pool as one line
        _write_frame(proto_out, {"error": f"{type(exc).__name__}: {exc}"})
        return
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
                    _write_frame(proto_out, _verdict("sandbox_error", f"could not restart the sandbox: {exc}"))
                    continue
            kills = oom_kills(groups)
            verdict = _run_job(channel, {**job, "limits": config["limits"]})
            if verdict["status"] not in ("passed", "sandbox_error") and oom_kills(groups) > kills:
                verdict["status"] = "memory"  # the sandbox's cgroup ran out and the kernel killed in it
            if not verdict.pop("clean", False):
                _stop_sandbox(config, handle)
                channel = handle = None
            _write_frame(proto_out, verdict)
    finally:
        _stop_sandbox(config, handle)


if __name__ == "__main__":
    sys.exit(main())
