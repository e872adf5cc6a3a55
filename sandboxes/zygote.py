"""The warm process inside a sandbox (bubblewrap or a container): forks one candidate per job.

Why a zygote: forking a started Python is far cheaper than starting a new one. The zygote
runs as PID 1 of the sandbox's PID namespace, which buys two properties for free:

* the kernel ignores SIGKILL/SIGTERM sent to PID 1 from inside its own namespace, so a candidate
  cannot kill the zygote; it is also made non-dumpable, so the candidate (same uid, no capabilities)
  cannot ptrace it or read its memory or fds through /proc;
* ``kill(-1, SIGKILL)`` from PID 1 reaches every other process in the namespace, so ending a job
  kills the candidate's whole tree: double-forked daemons, new sessions, processes ignoring signals.

The zygote decides nothing. Its channel to the harness is a Unix socket (bubblewrap: its stdin;
Docker: a socket bind-mounted into the container), so the harness sends the candidate's socket end
along with each job: calls never pass through this process, and nothing here runs between the fork
and the job's end but the wait. It keeps bounded tails of the candidate's stdout/stderr and
enforces the wall-clock limit. Everything it sends is treated by the harness as untrusted.

The same zygote runs the judge (:mod:`.judge`), in a sandbox of its own: there a job's child
runs the tests instead of a program, talking to the candidate on the socket the harness handed it.

Every job starts from a clean sandbox: the root and ``/dev`` are read-only, ``/tmp`` and ``/dev/shm``
are size-capped and emptied after every job, and so are the System V IPC objects and the user
keyrings of the sandbox's namespaces (POSIX message queues are refused by ``RLIMIT_MSGQUEUE``).

This file runs inside the sandbox after ``wire.py``'s and ``candidate.py``'s sources (and the
judge's, in the judge's sandbox), under ``python -I -S``.
"""

import _signal
import ctypes
import gc
import json
import os
import resource
import select
import shutil
import signal
import socket
import stat
import sys
import time

try:  # outside the sandbox (imports, tests); inside, wire.py's and candidate.py's sources precede this file
    from k2rl.sandboxes.candidate import _candidate, _limits, _send
    from k2rl.sandboxes.judge import judge_main, judge_plan
    from k2rl.sandboxes.wire import READ_SIZE, FrameReader
except ImportError:  # pragma: no cover - inside the sandbox
    pass

TAIL = 8192  # bytes of stdout/stderr kept for the verdict
IO_CAP = 4 << 20  # bytes of stdout kept for stdin/stdout comparison
SCRATCH = ("/tmp", "/dev/shm")  # writable places, emptied after every job
# Imported once here so a candidate's `from typing import List` costs a dict lookup, not a file load.
# Not threading or random (nor subprocess, tempfile, statistics, which import them): their at-fork
# hooks write to many more pages in every child, which costs more per verdict than importing them
# in the few programs that use them.
PRELOAD = ("typing", "math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string",
           "copy", "hashlib", "fractions", "decimal", "datetime", "operator", "dataclasses", "array")


try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
    _PRCTL = _LIBC.prctl  # looked up once; each fork inherits it
except (OSError, AttributeError):  # pragma: no cover
    _LIBC = _PRCTL = None
SOCKET_ENV = "K2RL_ZYGOTE_SOCKET"  # Docker: the harness's Unix socket, bind-mounted into the container
_KEYCTL = {"x86_64": 250, "aarch64": 219}.get(os.uname().machine)  # syscall numbers
_IPC_RMID = 0


def _clear_ipc() -> None:
    """Remove every System V IPC object and clear the user keyrings: state a job could leave behind.

    A shared-memory segment outlives its creator (its memory stays charged to the sandbox) and, like
    a semaphore, a message queue or a key, could carry data to the next job of this warm sandbox.
    """
    if _LIBC is None:
        return
    for table, remove in (("shm", lambda i: _LIBC.shmctl(i, _IPC_RMID, None)),
                          ("sem", lambda i: _LIBC.semctl(i, 0, _IPC_RMID)),
                          ("msg", lambda i: _LIBC.msgctl(i, _IPC_RMID, None))):
        try:
            with open(f"/proc/sysvipc/{table}") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 1 and fields[1].isdigit():
                remove(int(fields[1]))
    if _KEYCTL is not None:
        for keyring in (-4, -5):  # KEY_SPEC_USER_KEYRING, KEY_SPEC_USER_SESSION_KEYRING
            _LIBC.syscall(_KEYCTL, 7, keyring)  # KEYCTL_CLEAR; refused under Docker's seccomp: nothing to clear


def _dumpable(flag: int) -> None:
    if _PRCTL is not None:
        _PRCTL(4, flag, 0, 0, 0)  # PR_SET_DUMPABLE


def _kill_all(job=None) -> None:
    """SIGKILL every process in the namespace except ourselves, then reap them all."""
    if os.getpid() != 1:  # kill(-1) outside a fresh PID namespace would hit the whole host
        os._exit(70)
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return
        except InterruptedError:
            continue
        if job is not None and pid == job.pid and job.status is None:
            job.status = status


def _wipe(directory: str) -> None:
    """Empty a writable scratch directory so nothing a candidate leaves there reaches the next one."""
    def force(function, path, _exc):
        try:
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            function(path)
        except OSError:
            pass

    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                os.chmod(entry.path, 0o700)
                shutil.rmtree(entry.path, onerror=force)
            else:
                os.unlink(entry.path)
        except OSError:
            pass


# ---------------------------------------------------------------- zygote side

class _Job:
    def __init__(self, request: dict):
        self.mode = request["mode"]
        self.deadline = time.monotonic() + float(request["timeout"])
        self.stdin = memoryview(request.get("stdin", "").encode())
        self.pid = 0
        self.out = bytearray()
        self.err = bytearray()
        self.out_total = 0
        self.pipes = {}  # fd -> "out" | "err" | "in"
        self.status = None  # os.waitpid status of the candidate, once reaped
        self.timed_out = False


def _start(request: dict, devnull: int, wake: tuple, given: list) -> _Job:
    """Fork the candidate (or the judge); ``given``: the sockets the harness sent with the request."""
    job = _Job(request)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe() if job.mode == "io" else (devnull, -1)
    plan = judge_plan(request["tests"]) if job.mode == "judge" else None  # compiled before the fork, cached
    child_fds = {"judge": given, "tests": given[:1]}.get(job.mode, [])
    for fd in given:
        if fd not in child_fds:
            os.close(fd)
    settings = _limits(request["limits"], float(request["timeout"]))
    pid = os.fork()
    if pid == 0:  # candidate
        # Every page the child writes costs a copy-on-write fault, so it calls C functions directly
        # (``_signal``, not ``signal``'s enum wrappers, which run a page-hungry path through enum).
        try:
            os.setsid()
            _signal.set_wakeup_fd(-1)
            _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
            _dumpable(1)
            os.dup2(in_r, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            low = 3
            for fd in sorted(child_fds):
                os.closerange(low, fd)
                low = fd + 1
            os.closerange(low, 4096)
            for which, value in settings:
                resource.setrlimit(which, value)
            if job.mode == "judge":
                judge_main(request, plan, child_fds)
            _candidate(job.mode, request["program"], child_fds[0] if child_fds else -1)
        finally:
            os._exit(1)
    job.pid = pid
    for fd in (out_w, err_w) + ((in_r,) if job.mode == "io" else ()):
        os.close(fd)
    job.pipes = {out_r: "out", err_r: "err"}
    if job.mode == "io":
        os.set_blocking(in_w, False)
        job.pipes[in_w] = "in"
        if not job.stdin:
            os.close(in_w)
            del job.pipes[in_w]
    for fd in child_fds:
        os.close(fd)  # only the child may hold it, so its death reaches the other end as EOF
    return job


def _keep(buf: bytearray, data: bytes, cap: int) -> None:
    buf += data
    if len(buf) > cap:
        del buf[: len(buf) - cap]


def _pump(job: _Job, fd: int) -> None:
    role = job.pipes[fd]
    if role == "in":
        try:
            sent = os.write(fd, job.stdin[:65536])
        except BrokenPipeError:
            sent = len(job.stdin)
        job.stdin = job.stdin[sent:]
        if not job.stdin:
            os.close(fd)
            del job.pipes[fd]
        return
    data = os.read(fd, 1 << 16)
    if not data:
        os.close(fd)
        del job.pipes[fd]
        return
    if role == "out":
        job.out_total += len(data)
        _keep(job.out, data, IO_CAP if job.mode == "io" else TAIL)
    else:
        _keep(job.err, data, TAIL)


def _finish(job: _Job) -> dict:
    """Kill everything, drain the pipes, and describe how the candidate ended."""
    _kill_all(job)
    for scratch in SCRATCH:
        _wipe(scratch)
    _clear_ipc()
    for fd, role in list(job.pipes.items()):
        if role == "in":
            os.close(fd)
            del job.pipes[fd]
        while fd in job.pipes:  # every writer is dead: this reaches EOF
            _pump(job, fd)
    status = job.status
    done = {"ev": "done", "stdout": job.out.decode("utf-8", "replace"),
            "stderr": job.err[-TAIL:].decode("utf-8", "replace"), "stdout_total": job.out_total,
            "timeout": job.timed_out}
    if status is not None:
        done["exit"] = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        done["signal"] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    return done


_ANCILLARY = socket.CMSG_SPACE(4 * 4)  # room for a few descriptors per read


def _read_control(channel, given: list) -> bytes:
    """Bytes from the harness; descriptors sent with them (candidate sockets) are queued in ``given``.

    ``recvmsg`` directly rather than ``socket.recv_fds``: this runs while the candidate shares our
    pages, and every page the Python-level helper would touch costs a copy-on-write fault.
    """
    if channel is None:
        return os.read(0, READ_SIZE)
    data, ancillary, _flags, _addr = channel.recvmsg(READ_SIZE, _ANCILLARY)
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            given.extend(int.from_bytes(payload[i:i + 4], sys.byteorder) for i in range(0, len(payload) - 3, 4))
    return data


def main() -> None:
    if os.getpid() != 1:
        sys.exit("zygote: refusing to run outside a fresh PID namespace (must be PID 1)")
    _dumpable(0)
    if os.environ.get(SOCKET_ENV):  # Docker: our channel is the harness's socket, not the attach stream
        link = socket.socket(socket.AF_UNIX)
        link.connect(os.environ[SOCKET_ENV])
        os.dup2(link.fileno(), 0)
        os.dup2(link.fileno(), 1)
        link.close()
    # A Unix socket can carry the candidates' socket ends from the harness.
    channel = socket.socket(fileno=os.dup(0)) if stat.S_ISSOCK(os.fstat(0).st_mode) else None
    given: list = []
    os.chdir("/tmp")
    devnull = os.open(os.devnull, os.O_RDWR)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    reader = FrameReader()
    job = None
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    gc.freeze()  # keep the zygote's objects out of the collector: forks then share more pages
    _send(1, b"Z", {"ev": "ready", "pid": os.getpid(), "uid": os.getuid()})
    while True:
        readers, writers = [0, wake_r], []
        timeout = None
        if job:
            for fd, role in job.pipes.items():
                (writers if role == "in" else readers).append(fd)
            if not job.timed_out:
                timeout = max(0.0, job.deadline - time.monotonic())
        try:
            ready_r, ready_w, _ = select.select(readers, writers, [], timeout)
        except InterruptedError:
            continue
        if job and not job.timed_out and time.monotonic() >= job.deadline:
            job.timed_out = True
            _kill_all(job)
            _send(1, b"Z", {"ev": "timeout"})
        for fd in ready_w:
            if job and fd in job.pipes:
                _pump(job, fd)
        for item in ready_r:
            if item == 0:
                data = _read_control(channel, given)
                if not data:
                    _kill_all()
                    os._exit(0)
                for kind, body in reader.feed(data):
                    job = _control(job, kind, body, devnull, (wake_r, wake_w), given)
            elif item == wake_r:
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
                _reap(job)
            elif job and item in job.pipes:
                _pump(job, item)
        if job and job.mode == "io" and job.status is not None and not job.pipes:
            _send(1, b"Z", _finish(job))
            job = None


def _reap(job) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if job and pid == job.pid:
            job.status = status
            if job.mode in ("tests", "judge"):
                _send(1, b"Z", {"ev": "exit", "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                                "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None})
            # Nothing may outlive the program. In tests mode this also closes every copy of its
            # socket, which is how a harness blocked reading it learns that the program is gone.
            _kill_all(job)


def _control(job, kind: bytes, body: bytes, devnull: int, wake: tuple, given: list):
    if kind == b"E":  # the harness is done with this job (a bare frame: no parsing while it runs)
        if job:
            _send(1, b"Z", _finish(job))
        return None
    request = json.loads(body)
    if request["op"] == "run":
        if job:
            _kill_all(job)
        # The descriptors that came with this job, in order; the harness is the only writer here.
        count = min(len(given), 1 if request.get("fd") is True else int(request.get("fds", 0)))
        fds = given[:count]
        del given[:count]
        return _start(request, devnull, wake, fds)
    return job


if __name__ == "__main__":
    main()
