"""The harness: the trusted supervisor of one pool slot, outside every sandbox; it runs no job code.

One harness process per pool slot (``python -m k2rl.sandboxes.harness``), started by
:class:`k2rl.sandboxes.pool.Sandbox`. It starts two sandboxes (bubblewrap or containers) once and
keeps them warm: the candidate's, where the program runs, and the judge's (:mod:`.judge`), where a
job's tests run and its verdict is decided. Neither the program nor the tests run here: both are
code from the request or the dataset. Per job, the harness gives the candidate one end of a fresh
socket and the judge the other (and a report socket of its own), forwards the candidate's zygote
events (exit, timeout, the closing report with its output) to the judge, and takes the judge's
verdict, checked against the vocabulary. stdin/stdout jobs compare output here: no test code runs.

Why a verdict cannot be forged by the candidate: see :mod:`.judge`; exit codes and output are
never read as success. Why the tests cannot reach the host: see :mod:`.local` and
:mod:`.docker_backend`; the judge's sandbox is as tight as the candidate's.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time

from k2rl.sandboxes.session import GRACE_S, Abort, Channel, ProgramTimeout, SandboxLost
from k2rl.sandboxes.verdict import Status, safe_text, verdict_status
from k2rl.sandboxes.wire import READ_SIZE, FrameReader, pack_frame

STARTUP_S = 120.0  # a container can take a while to start on a loaded machine
ROLES = ("candidate", "judge")


def _verdict(status: Status, detail: str = "", done: dict | None = None, start: float = 0.0) -> dict:
    """The reply to the pool: plain data, the status as its string value, every text encodable."""
    status = verdict_status(status)
    done = done or {}
    return {"passed": status == Status.PASSED, "status": status.value, "detail": safe_text(detail)[:2000],
            "stdout": safe_text(done.get("stdout", ""))[-8192:], "stderr": safe_text(done.get("stderr", ""))[-8192:],
            "duration_s": time.monotonic() - start}


def _next_frame(channels: list, deadline: float):
    """``(channel, kind, body)``: the next frame on any of ``channels``; ``(channel, None, None)`` at its end."""
    while True:
        for channel in channels:
            if channel.pending:
                return (channel, *channel.pending.pop(0))
        left = deadline - time.monotonic()
        if left <= 0:
            raise ProgramTimeout("no answer from the sandboxes in time")
        ready = select.select([c.read_fd for c in channels], [], [], left)[0]
        for channel in channels:
            if channel.read_fd in ready:
                try:
                    channel.fill()
                except SandboxLost:
                    return channel, None, None


def _event(body: bytes) -> dict:
    try:
        event = json.loads(body)
    except ValueError:
        raise SandboxLost("a zygote sent a malformed event") from None
    return event if type(event) is dict else {}


def _wait_done(channel: Channel, deadline: float) -> dict:
    """Skip events until the zygote's closing report of the current job."""
    while True:
        kind, body = channel.recv(deadline)
        if kind == b"Z":
            event = _event(body)
            if event.get("ev") == "done":
                return event


def run_tests_job(sandboxes: dict, job: dict) -> dict:
    """One tests job: the program in the candidate's sandbox, its tests in the judge's."""
    start = time.monotonic()
    candidate, judge = sandboxes["candidate"], sandboxes["judge"]
    theirs, its_peer = socket.socketpair()  # the candidate's socket: one end each
    ours, report_end = socket.socketpair()  # the judge's report socket
    try:
        candidate.send(b"Z", {"op": "run", "mode": "tests", "program": job["program"], "timeout": job["timeout"],
                              "limits": job["limits"], "fd": True}, (theirs.fileno(),))
        judge.send(b"Z", {"op": "run", "mode": "judge", "tests": job["tests"], "budget": job["timeout"],
                          "timeout": job["timeout"] + 2 * GRACE_S + 1.0, "limits": job["limits"], "fds": 2},
                   (its_peer.fileno(), report_end.fileno()))
    finally:
        for sock in (theirs, its_peer, report_end):
            sock.close()  # their ends live on in the sandboxes only, so a death there reads as EOF here
    report = Channel(ours.fileno(), ours.fileno(), sock=ours)
    deadline = start + job["timeout"] + 3 * GRACE_S + 1.0
    done = verdict = None
    ended = False  # the candidate was asked to end (E sent)
    try:
        while verdict is None:
            channel, kind, body = _next_frame([report, candidate, judge], deadline)
            if kind is None:
                if channel is not report:
                    raise SandboxLost("a sandbox closed its channel")
                verdict = {"status": Status.ERROR.value, "detail": "the tests ended before giving a verdict",
                           "clean": True}
            elif channel is candidate and kind == b"Z":
                event = _event(body)
                done = event if event.get("ev") == "done" else done
                try:
                    report.send(b"Z", body)
                except SandboxLost:
                    pass  # the judge is gone; its zygote says how
            elif channel is report and kind == b"E" and not ended:
                ended = True
                candidate.send(b"E", b"")
            elif channel is report and kind == b"V":
                verdict = _event(body)
            elif channel is judge and kind == b"Z" and _event(body).get("ev") in ("exit", "timeout"):
                timed_out = _event(body)["ev"] == "timeout"
                verdict = {"status": (Status.TIMEOUT if timed_out else Status.ERROR).value, "clean": True,
                           "detail": "the tests exceeded the time limit" if timed_out
                           else "the tests ended before giving a verdict"}
        if done is None:
            if not ended:
                candidate.send(b"E", b"")
            done = _wait_done(candidate, time.monotonic() + 10.0)
        judge.send(b"E", b"")
        _wait_done(judge, time.monotonic() + 10.0)
    finally:
        ours.close()
    status, detail, cases = verdict.get("status"), str(verdict.get("detail", "")), verdict.get("cases")
    try:
        verdict_status(status)
    except ValueError:  # the tests' side is not trusted to speak the protocol either
        status, detail, cases = Status.ERROR, "the tests sent no valid verdict", None
    reply = {**_verdict(status, detail, done, start), "clean": verdict.get("clean") is True}
    if type(cases) is list and len(cases) == 2 and all(type(x) is int for x in cases):
        reply["cases"] = cases
    return reply


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

def _start_sandbox(config: dict, role: str):
    """``(channel, handle)`` of a fresh sandbox whose zygote has said it is ready."""
    if config["backend"] == "docker":
        from k2rl.sandboxes.docker_backend import start_container

        handle, ours = start_container(config, role)
    else:
        from k2rl.sandboxes.local import bwrap_command

        argv, kwargs = bwrap_command(config["limits"]["tmp_mb"], role)
        ours, theirs = socket.socketpair()  # a Unix socket, so the zygote can pass descriptors
        handle = subprocess.Popen(argv, stdin=theirs, stdout=theirs, stderr=subprocess.DEVNULL, **kwargs)
        theirs.close()
    handle._k2rl_sock = ours  # keep the socket object (and its fd) alive
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


def _run_job(sandboxes: dict, job: dict) -> dict:
    """One job, with a watchdog: a backstop behind the zygotes' own limits and the relay's deadline."""
    cases = len(job.get("cases") or [None])
    signal.setitimer(signal.ITIMER_REAL, job["timeout"] * cases + GRACE_S * (3 + cases) + 2.0)
    try:
        if job["mode"] == "io":
            return run_io_job(sandboxes["candidate"], job)
        return run_tests_job(sandboxes, job)
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
    # The protocol moves to private fds; 0/1/2 become /dev/null.
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


def _start_all(config: dict, handles: dict) -> dict:
    """Both sandboxes started (their handles in ``handles``, for stopping); role -> channel."""
    channels = {}
    for role in ROLES:
        channels[role], handles[role] = _start_sandbox(config, role)
    return channels


def _stop_all(config: dict, handles: dict) -> None:
    for role in list(handles):
        _stop_sandbox(config, handles.pop(role))


def _serve(config: dict, proto_in: int, proto_out: int, reader: FrameReader, pending: list, oom) -> None:
    handles: dict = {}
    try:
        sandboxes = _start_all(config, handles)
    except BaseException as exc:  # noqa: BLE001 - reported to the pool as one line
        _stop_all(config, handles)
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
            if sandboxes is None:
                try:
                    sandboxes = _start_all(config, handles)
                except BaseException as exc:  # noqa: BLE001
                    _stop_all(config, handles)
                    _write_frame(proto_out, _verdict(Status.SANDBOX_ERROR, f"could not restart the sandbox: {exc}"))
                    continue
            kills = oom.count()
            verdict = _run_job(sandboxes, {**job, "limits": config["limits"]})
            if verdict["status"] not in (Status.PASSED, Status.SANDBOX_ERROR) and oom.count() > kills:
                verdict["status"] = Status.MEMORY.value  # the sandbox's cgroup ran out and the kernel killed in it
            if not verdict.pop("clean", False):
                _stop_all(config, handles)
                sandboxes = None
            _write_frame(proto_out, verdict)
    finally:
        _stop_all(config, handles)


if __name__ == "__main__":
    sys.exit(main())
