"""The user-facing sandbox: a pool of warm harness processes, each owning one warm sandbox.

``run_tests_many`` fans jobs out over the pool with one thread per slot (the threads only wait on
pipes; all work happens in the harness and sandbox processes), and returns verdicts in input order.

Why this is not the math checker's :mod:`k2rl.rewards.deadline_pool`, although both keep warm child
processes and replace one that stops answering: the trust boundary, what a worker is and how a
deadline is enforced all differ. A worker here is a harness process that owns a sandbox (bubblewrap
or a container) running untrusted *code*. The program's limits are enforced inside it (the zygote's
wall-clock kill, rlimits, cgroups, the harness's SIGALRM watchdog), so "timeout" is a verdict the
harness decides; this pool's own deadline (``BACKSTOP_S`` past a job's budget) is only a backstop,
and its expiry means the harness is broken: ``sandbox_error``, never a verdict about the program.
Jobs go one at a time per slot as JSON frames (nothing from that side is unpickled), slots are
pinned to CPUs, and a replacement starts a new sandbox. The deadline pool's workers are trusted
interpreters running k2rl's own function on untrusted *data*; its parent's deadline *is* the outcome,
and it pipelines chunks of tasks over pickled connections from one waiting loop. What the two share
(start a child interpreter, kill it and start another) is a few lines in each; one core for both
would put pickling and chunk stealing next to the security boundary, or make every math check pay
for the sandbox protocol.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

from k2rl.errors import K2RLError
from k2rl.sandboxes.verdict import Status, Verdict
from k2rl.sandboxes.wire import READ_SIZE, FrameError, FrameReader, pack_frame

BACKSTOP_S = 30.0  # beyond the harness's own limits: only a wedged harness process gets here
# Shared by every Sandbox in this process, so that several small pools do not all start on one CPU.
_NEXT_CPU = itertools.count()


class _Slot:
    """One harness process (``python -m k2rl.sandboxes.harness``) and its sandbox, on ``cpu`` if given."""

    def __init__(self, config: dict, cpu: int | None = None):
        self.cpu = cpu
        config = {**config, "cpu": cpu}
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
        self.proc = subprocess.Popen([sys.executable, "-m", "k2rl.sandboxes.harness"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, start_new_session=True, env=env)
        self.reader, self.pending = FrameReader(), []
        self._send(config)
        reply = self._recv(time.monotonic() + 180.0)
        if reply is None or "error" in reply:
            self.close()
            why = reply["error"] if reply else "the harness process exited"
            raise K2RLError(f"{config['backend']} sandbox failed to start: {why}")

    def _send(self, obj) -> None:
        self.proc.stdin.write(pack_frame(b"H", json.dumps(obj).encode()))
        self.proc.stdin.flush()

    def _recv(self, deadline: float):
        fd = self.proc.stdout.fileno()
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            data = os.read(fd, READ_SIZE)
            if not data:
                return None
            try:
                self.pending.extend(self.reader.feed(data))
            except FrameError:
                return None
        return json.loads(self.pending.pop(0)[1])

    def run(self, job: dict, budget_s: float) -> Verdict | None:
        """The verdict, or None when the harness process is unusable (the caller replaces the slot)."""
        try:
            self._send(job)
        except (BrokenPipeError, OSError):
            return None
        reply = self._recv(time.monotonic() + budget_s + BACKSTOP_S)
        if reply is None:
            return None
        try:
            return Verdict.from_dict(reply)
        except ValueError:  # a status outside the vocabulary: this harness is not speaking the protocol
            return None

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def _close_all(slots: list) -> None:
    for slot in slots:
        slot.close()


class Sandbox:
    """Runs programs against tests in a pool of warm sandboxes of one backend.

    Options (all keyword): ``workers`` (pool size, default: twice the CPU count, at most 32); ``pin``
    (local backend: each worker's harness and sandbox share one CPU, round-robin; default True); per process
    ``memory_mb`` (address space), ``nproc``, ``fsize_mb``, ``nofile``; per sandbox ``tmp_mb`` (the
    private /tmp), ``sandbox_memory_mb`` and ``pids`` (a container's limits; for the local backend a
    cgroup when running as root, see :mod:`k2rl.sandboxes.cgroups`); for Docker ``image``, ``cpus``.
    """

    def __init__(self, backend: str = "local", *, workers: int | None = None, memory_mb: int = 1024,
                 nproc: int = 64, fsize_mb: int = 16, nofile: int = 256, tmp_mb: int = 64,
                 image: str | None = None, cpus: float = 1.0, sandbox_memory_mb: int = 2048, pids: int = 128,
                 pin: bool = True):
        self.backend = backend
        # Two per CPU: a verdict spends part of its time waiting on another process, so one worker
        # per CPU would leave cores idle. Capped: each worker holds memory in two processes.
        self.workers = workers if workers is not None else min(32, 2 * (os.cpu_count() or 1))
        for name, value in (("workers", self.workers), ("memory_mb", memory_mb), ("nproc", nproc),
                            ("fsize_mb", fsize_mb), ("nofile", nofile), ("tmp_mb", tmp_mb), ("pids", pids),
                            ("sandbox_memory_mb", sandbox_memory_mb)):
            if not isinstance(value, int) or value < 1:
                raise K2RLError(f"sandbox option {name} must be a positive integer, got {value!r}")
        self._config = {"backend": backend,
                        # Docker limits processes per container (pids cgroup); RLIMIT_NPROC would
                        # count every uid-65534 process on the host instead.
                        "limits": {"memory_mb": memory_mb, "nproc": nproc if backend == "local" else 0, "fsize_mb": fsize_mb,
                                   "nofile": nofile, "tmp_mb": tmp_mb, "sandbox_memory_mb": sandbox_memory_mb,
                                   "pids": pids},
                        "docker": {"image": image, "cpus": cpus}}
        # Pinning: a harness and its candidate take turns (one always waits on the other), so a second
        # CPU buys them nothing, while every call's wake-up across CPUs costs an inter-processor
        # interrupt and a cold cache. One CPU per worker, round-robin over the CPUs we may use
        # (continuing across pools).
        # Docker's processes belong to the engine, so only the local backend pins.
        allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self._cpus = allowed if pin and backend == "local" and len(allowed) > 1 else []
        self._idle: queue.Queue = queue.Queue()
        self._slots: list[_Slot] = []
        self._lock = threading.Lock()
        self._started = False
        self._finalizer = weakref.finalize(self, _close_all, self._slots)
        atexit.register(self._finalizer)

    # -- pool management
    def start(self) -> "Sandbox":
        """Start every worker now (otherwise the first call does it)."""
        with self._lock:
            if self._started:
                return self
            with ThreadPoolExecutor(self.workers) as pool:
                futures = [pool.submit(_Slot, self._config, self._next_cpu()) for _ in range(self.workers)]
                errors = []
                for future in futures:
                    try:
                        slot = future.result()
                    except K2RLError as exc:
                        errors.append(exc)
                        continue
                    self._slots.append(slot)
                    self._idle.put(slot)
            if errors:
                self._close_locked()
                raise errors[0]
            self._started = True
        return self

    def _next_cpu(self) -> int | None:
        return self._cpus[next(_NEXT_CPU) % len(self._cpus)] if self._cpus else None

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        _close_all(self._slots)
        self._slots.clear()
        self._idle = queue.Queue()
        self._started = False

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, job: dict, budget_s: float) -> Verdict:
        self.start()
        slot = self._idle.get()
        verdict = slot.run(job, budget_s)
        if verdict is None:  # the harness process died or wedged: replace it
            with self._lock:
                slot.proc.kill()
                slot.close()
                self._slots.remove(slot)
                try:
                    slot = _Slot(self._config, slot.cpu)
                    self._slots.append(slot)
                except K2RLError:
                    slot = None
            verdict = Verdict(False, Status.SANDBOX_ERROR, detail="the harness process failed")
        if slot is not None:
            self._idle.put(slot)
        return verdict

    # -- the contract
    def run_tests(self, program: str, tests: str, timeout_s: float = 10.0) -> Verdict:
        """Run ``program`` then ``tests`` (asserts, or ``def check(candidate)`` + ``check(name)``).

        The tests run in a sandbox of their own (not the program's) and see the program's top-level functions as proxies
        (arguments and results cross as plain data: None, bool, int, float, complex, str, bytes and
        lists/tuples/dicts/sets of those), its plain constants as copies, and anything else (classes,
        instances) as unsupported -- using one gives status "unsupported", never a pass. In-place
        mutation of an argument is not visible to the tests. ``passed`` is True only when every
        top-level statement of ``tests`` ran to completion; ``cases_passed``/``cases_total`` count
        top-level asserts and calls (a failed one does not stop the next).
        """
        _check_text(program, "program")
        _check_text(tests, "tests")
        return self._run({"mode": "tests", "program": program, "tests": tests, "timeout": float(timeout_s)},
                         float(timeout_s))

    def run_tests_many(self, pairs, timeout_s: float = 10.0) -> list[Verdict]:
        """``run_tests`` for many ``(program, tests)`` pairs concurrently; verdicts in input order."""
        return self._many(self.run_tests, pairs, timeout_s)

    def run_io(self, program: str, cases, timeout_s: float = 10.0) -> Verdict:
        """Run ``program`` as ``__main__`` once per ``(stdin, expected_stdout)`` case; passed if all match.

        Output is compared line by line ignoring trailing whitespace and trailing blank lines; a case
        that crashes or exits non-zero fails. ``timeout_s`` applies to each case.
        """
        _check_text(program, "program")
        cases = [(str(stdin), str(expected)) for stdin, expected in cases]
        if not cases:
            raise K2RLError("run_io needs at least one (stdin, expected_stdout) case")
        return self._run({"mode": "io", "program": program, "cases": cases, "timeout": float(timeout_s)},
                         float(timeout_s) * len(cases))

    def run_io_many(self, items, timeout_s: float = 10.0) -> list[Verdict]:
        """``run_io`` for many ``(program, cases)`` items concurrently; verdicts in input order."""
        return self._many(self.run_io, items, timeout_s)

    def _many(self, run, items, timeout_s: float) -> list[Verdict]:
        items = list(items)
        if not items:
            return []
        self.start()
        with ThreadPoolExecutor(min(self.workers, len(items))) as pool:  # threads only wait on pipes
            return list(pool.map(lambda item: run(item[0], item[1], timeout_s), items))


def _check_text(value, what: str) -> None:
    if not isinstance(value, str):
        raise K2RLError(f"{what} must be a str of Python source, got {type(value).__name__}")
