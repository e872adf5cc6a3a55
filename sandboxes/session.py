"""The judge's side of one program run: channels, proxies, and aborted calls.

A :class:`Session` is everything the judge knows about the candidate while its tests run: calls go
out as plain data on the candidate's own socket, replies come back as plain data, and the
candidate's zygote events (exit, timeout), forwarded by the harness on the judge's report channel,
turn a pending call into an :class:`Abort`. Aborts derive from ``BaseException`` so ``except Exception`` in
the tests cannot hide them, and a session remembers the first one: a run with an aborted call never
passes, even if the tests swallowed it.

It runs inside the tests' own sandbox (see :mod:`.judge`): this file's source follows ``wire.py``'s
and ``verdict.py``'s there, under ``python -I -S``, so it stays standard-library only.
"""

import builtins
import json
import os
import select
import socket
import struct
import time

try:  # outside a sandbox (imports, tests); inside, wire.py's and verdict.py's sources precede this file
    from k2rl.sandboxes.verdict import Status
    from k2rl.sandboxes.wire import READ_SIZE, FrameError, FrameReader, NotPlain, dump_value, load_value, pack_frame
except ImportError:  # pragma: no cover - inside the sandbox
    pass

GRACE_S = 2.0  # beyond the program's own time limit, for the zygote to report and the harness to react


class Abort(BaseException):
    """A call that cannot yield a value; BaseException so ``except Exception`` in tests cannot hide it."""

    status = Status.FAILED


class ProgramTimeout(Abort):
    status = Status.TIMEOUT


class ProgramGone(Abort):
    status = Status.CRASHED


class NotPlainResult(Abort):
    status = Status.NOT_PLAIN


class Unsupported(Abort):
    status = Status.UNSUPPORTED


class SandboxLost(Abort):
    status = Status.SANDBOX_ERROR


# ---------------------------------------------------------------- the channel to the sandbox

class Channel:
    """Frames to/from a peer over a Unix socket (or pipes): a zygote, or the judge's report socket."""

    def __init__(self, read_fd: int, write_fd: int, sock: socket.socket | None = None):
        self.read_fd, self.write_fd = read_fd, write_fd
        self.sock = sock  # a Unix socket to the zygote (local backend): it can carry descriptors to it
        self.frames = FrameReader()
        self.pending: list = []

    def send(self, kind: bytes, obj, fds: tuple = ()) -> None:
        """One frame; ``fds`` (a Unix-socket channel only) travel with its first byte."""
        data = pack_frame(kind, obj if isinstance(obj, bytes) else json.dumps(obj).encode())
        view = memoryview(data)
        try:
            if fds:
                view = view[socket.send_fds(self.sock, [view], list(fds)):]
            while view:
                view = view[os.write(self.write_fd, view):]
        except OSError as exc:
            raise SandboxLost(f"sandbox channel closed ({exc.strerror})") from None

    def fill(self) -> None:
        """Read what is there (the caller knows it is readable) into :attr:`pending`."""
        try:
            data = os.read(self.read_fd, READ_SIZE)
        except OSError:
            data = b""
        if not data:
            raise SandboxLost("the sandbox closed its channel")
        try:
            self.pending.extend(self.frames.feed(data))
        except FrameError as exc:
            raise SandboxLost(f"protocol violation: {exc}") from None

    def recv(self, deadline: float):
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProgramTimeout("no answer from the sandbox in time")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                self.fill()
        return self.pending.pop(0)


# ---------------------------------------------------------------- one program run

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
        self.direct: socket.socket | None = None  # our end of the candidate's socket (see :meth:`attach`)
        self.direct_frames = FrameReader()
        self.direct_pending: list = []

    def attach(self, sock: socket.socket) -> None:
        """Talk to the candidate on ``sock``, its socket's other end (the supervisor handed it to us).

        Blocking reads and writes bounded by the job's deadline, set once: no select() per call.
        The candidate's zygote kills its whole tree when it exits or overruns, which closes this
        socket, so its events never wait behind a read here.
        """
        left = max(0.001, self.deadline + GRACE_S - time.monotonic())
        limit = struct.pack("ll", int(left), int(left % 1 * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
        self.direct = sock

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
        """The next frame on the candidate's own socket; the zygote's events once it closes."""
        while not self.direct_pending:
            if self.gone is not None:
                raise self.gone
            if time.monotonic() >= self.deadline + GRACE_S:
                raise ProgramTimeout("no answer from the program in time")
            if self.channel.pending:
                kind, body = self.channel.recv(self.deadline + GRACE_S)
                self._event(json.loads(body) if kind == b"Z" else {})
                continue
            try:  # data before events: a reply sent just before exiting still counts
                data = self.direct.recv(READ_SIZE)
            except InterruptedError:
                continue
            except BlockingIOError:  # SO_RCVTIMEO: the backstop if the zygote never closes it
                raise ProgramTimeout("no answer from the program in time") from None
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
                try:  # blocks at most until SO_SNDTIMEO if the program stops reading
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
            self.channel.send(b"E", b"")
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
