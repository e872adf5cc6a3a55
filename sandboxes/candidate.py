"""The candidate side of a sandbox job: what the forked child of the zygote runs (see :mod:`.zygote`).

It executes the untrusted program and, for unit-test jobs, serves the harness's calls on its socket,
answering in the plain-data wire format; it decides nothing about the verdict. This file runs inside
the sandbox after ``wire.py``'s source and before ``zygote.py``'s, under ``python -I -S`` (so no
``from __future__`` here, and only the standard library).
"""

import builtins
import json
import os
import resource
import sys
import traceback

try:  # outside the sandbox (imports, tests); inside, wire.py's source precedes this file
    from k2rl.sandboxes.wire import READ_SIZE, FrameError, FrameReader, NotPlain, dump_value, load_value, pack_frame
except ImportError:  # pragma: no cover - inside the sandbox
    pass


def _send(fd: int, kind: bytes, obj) -> None:
    data = pack_frame(kind, json.dumps(obj).encode() if not isinstance(obj, bytes) else obj)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _limits(limits: dict, timeout: float) -> list:
    """The rlimits for one candidate, built before the fork so the child only applies them."""
    cpu = int(timeout) + 2
    settings = [
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),
        (resource.RLIMIT_AS, (limits["memory_mb"] << 20,) * 2),
        (resource.RLIMIT_FSIZE, (limits["fsize_mb"] << 20,) * 2),
        (resource.RLIMIT_NOFILE, (limits["nofile"],) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_MSGQUEUE, (0, 0)),  # no POSIX message queues: they would outlive the job
    ]
    if limits["nproc"] > 0:  # Docker counts processes with the container's pids cgroup instead
        settings.append((resource.RLIMIT_NPROC, (limits["nproc"],) * 2))
    return settings


def _describe(exc: BaseException) -> list:
    return [type(exc).__name__, "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]]


def _candidate(mode: str, program: str, sock_fd: int) -> None:
    """Runs in the forked child: execute the program, then (tests mode) serve calls on the socket."""
    # A real module in sys.modules, so pickle (multiprocessing) can find the program's functions.
    module = type(sys)("__main__" if mode == "io" else "solution")
    module.__file__ = "solution.py"
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    namespace["__builtins__"] = builtins
    sys.argv = ["solution.py"]

    def reply(obj) -> None:
        for stream in (sys.stdout, sys.stderr):  # output before the reply reaches the tails
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        _send(sock_fd, b"C", obj)  # the bare fd: a socket object's machinery costs the child pages

    try:
        exec(compile(program, "solution.py", "exec"), namespace)
    except BaseException as exc:  # noqa: BLE001 - the program's failure is data for the harness
        if mode == "io":
            code = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 1
            if not isinstance(exc, SystemExit):
                traceback.print_exc()
            sys.stdout.flush()
            os._exit(code)
        traceback.print_exc()
        reply({"load_error": _describe(exc)})
        sys.stderr.flush()
        os._exit(1)
    if mode == "io":
        sys.stdout.flush()
        os._exit(0)

    names, values = {}, {}
    for name, value in list(namespace.items()):
        if name.startswith("__") or type(value).__name__ == "module":
            continue
        if isinstance(value, type):
            names[name] = "class"
        elif callable(value):
            names[name] = "function"
        else:
            try:
                values[name] = dump_value(value)
                names[name] = "value"
            except NotPlain:
                names[name] = "object"
    reply({"ready": names, "values": values})

    reader = FrameReader()
    while True:
        data = os.read(sock_fd, READ_SIZE)
        if not data:
            os._exit(0)
        for _kind, body in reader.feed(data):
            request = json.loads(body)
            call_id = request["id"]
            try:
                args = load_value(request["args"])
                kwargs = load_value(request["kwargs"])
                result = namespace[request["call"]](*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001
                reply({"id": call_id, "raise": _describe(exc)})
                continue
            try:
                tree = dump_value(result)
            except NotPlain as exc:
                reply({"id": call_id, "unplain": str(exc)[:500]})
                continue
            try:
                reply({"id": call_id, "ok": tree})
            except (ValueError, FrameError) as exc:  # too many digits, or an oversized frame
                reply({"id": call_id, "unplain": str(exc)[:500]})
