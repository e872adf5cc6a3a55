"""A small process pool whose per-task deadline holds from any thread.

Checkers such as math-verify protect themselves with ``signal.alarm``, which only works on the main
thread of the main interpreter — not inside a trainer's reward thread or an async event loop. Here
the *parent* enforces the deadline instead: each worker runs one task at a time, the parent waits on
all worker pipes with a timeout, and a worker that overruns is killed and replaced. One hostile input
therefore costs at most one timeout and one cheap restart, and never blocks later tasks.

Tasks travel in chunks (the tasks of one key, e.g. one prompt's samples), one message per chunk,
and each worker holds the next chunk before it finishes the current one, so it never sits idle
waiting for a busy parent between short checks. The deadline stays per task: the
worker answers each task as it finishes, stamped with the time, and the next task's deadline runs
from that stamp. A task that overruns or kills its worker settles alone; the rest of its chunks go
back to the queue.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot kill the one worker running a stuck
task (``cancel`` only works for tasks that have not started), so a hang poisons the pool.

Why not the sandbox's pool (:mod:`k2rl.sandboxes.pool`), although both keep warm child processes and
replace one that stops answering: the trust boundary, what a worker is and how a deadline is
enforced all differ. A worker here is a trusted interpreter running k2rl's own function on untrusted
*data*; this parent's deadline *is* the task's outcome (``timeout``), enforced by killing the worker,
and tasks travel in pipelined chunks over pickled connections, all waited on from one loop. A sandbox
worker is a harness process that owns a bubblewrap or Docker sandbox running untrusted *code*; the
program's limits are enforced inside it (the zygote, rlimits, cgroups, a SIGALRM watchdog), so its
"timeout" is a verdict the harness decides, and the pool's own deadline is only a backstop whose
expiry is an infrastructure failure. Its jobs go one at a time per slot as JSON frames, never
pickled, and a replacement must start a new sandbox. What the two share (start a child interpreter,
kill it and start another) is a few lines in each; one core for both would put pickling and chunk
stealing next to the security boundary, or make every math check pay for the sandbox protocol.

Workers start lazily on first use as fresh interpreters (``python -c``), talking over a socket pair
with ``multiprocessing.connection`` framing. Forking a parent that holds torch threads and CUDA
state is unsafe, and ``multiprocessing``'s spawn/forkserver contexts re-run the parent's
``__main__`` in each child — for a training script without a main guard, that would start training
again inside the checker.
"""

from __future__ import annotations

import collections
import importlib
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait

OK, TIMEOUT, ERROR = "ok", "timeout", "error"
STARTUP_TIMEOUT_S = 120.0  # a worker that cannot even import its checker in this long is broken


def _serve(conn: Connection, func: Callable, memory_limit_mb: int | None, initializer: Callable | None) -> None:
    """Worker loop: receive a chunk of tasks, send back ``(status, value, finished_at)`` for each as it
    finishes (``finished_at`` on the shared monotonic clock: the next task's start), until told to stop."""
    if memory_limit_mb:
        try:
            import resource

            limit = memory_limit_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass  # best effort: the deadline still bounds a runaway task
    if initializer is not None:
        initializer()
    conn.send(("ready", None, time.monotonic()))  # start-up is not charged to the first task's deadline
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        for task in chunk:
            try:
                reply = (OK, func(task))
            except BaseException as exc:  # noqa: BLE001  (a MemoryError or RecursionError is still a verdict)
                reply = (ERROR, f"{type(exc).__name__}: {exc}"[:500])
            try:
                conn.send((*reply, time.monotonic()))
            except (EOFError, OSError):
                return


def _worker_main() -> None:
    """Entry point of a worker interpreter: ``argv = [fd, "module:function", memory_limit_mb, "module:init"]``."""
    fd, target, memory, init = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    _serve(Connection(int(fd)), _resolve(target), memory or None, _resolve(init) if init else None)


def _resolve(path: str) -> Callable:
    module_name, _, attr = path.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _function_path(func: Callable) -> str:
    module, name = getattr(func, "__module__", None), getattr(func, "__qualname__", "")
    if not module or module == "__main__" or "<" in name or "." in name:
        raise ValueError(f"{func!r} must be a top-level function of an importable module")
    return f"{module}:{name}"


class _Worker:
    def __init__(self, target: str, memory_limit_mb: int | None, initializer: str):
        ours, theirs = socket.socketpair()
        code = "from k2rl.rewards.deadline_pool import _worker_main; _worker_main()"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(theirs.fileno()), target, str(memory_limit_mb or 0), initializer],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.ready = False
        self.chunks: collections.deque[collections.deque[int]] = collections.deque()  # sent, not yet answered
        self.deadline = time.monotonic() + STARTUP_TIMEOUT_S

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self.conn.close()

    def ask_to_stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass

    def stop(self) -> None:
        try:
            self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
        self.kill()


class DeadlinePool:
    """Run ``func`` (a top-level function of an importable module) on tasks in worker processes, each task bounded by
    ``timeout_s`` seconds of wall time.

    :meth:`map` returns one ``(status, value)`` per task in order: ``("ok", result)``,
    ``("timeout", None)`` or ``("error", message)``. It is safe to call from any thread; calls are
    serialised, each spreading its tasks over all workers. ``initializer`` (also top-level) runs once
    in each worker before it takes tasks, outside any task's deadline: imports, warm-up. Tasks of one
    key travel in chunks of at most ``chunk_size``.
    """

    def __init__(
        self,
        func: Callable,
        *,
        workers: int = 2,
        timeout_s: float = 5.0,
        memory_limit_mb: int | None = None,
        initializer: Callable | None = None,
        chunk_size: int = 16,
    ):
        if workers < 1 or chunk_size < 1:
            raise ValueError("workers and chunk_size must be >= 1")
        self.target = _function_path(func)
        self.initializer = _function_path(initializer) if initializer else ""
        self.size = workers
        self.timeout_s = timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.chunk_size = chunk_size
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self.restarts = 0
        # stops the workers when the pool is garbage-collected or, at the latest, at interpreter exit
        self._finalizer = weakref.finalize(self, DeadlinePool._shutdown, self._workers)

    @staticmethod
    def _shutdown(workers: list[_Worker]) -> None:
        for worker in workers:
            worker.ask_to_stop()
        for worker in workers:
            worker.stop()
        workers.clear()

    def close(self) -> None:
        """Stop all workers; the pool starts fresh ones if used again."""
        with self._lock:
            self._shutdown(self._workers)

    @property
    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def _spawn(self) -> _Worker:
        return _Worker(self.target, self.memory_limit_mb, self.initializer)

    def map(self, tasks: Sequence, keys: Sequence | None = None) -> list[tuple[str, object]]:
        """Outcomes for ``tasks`` in order. Tasks with equal ``keys`` go to the same worker when the
        load allows, so a worker's own caches see all of them (e.g. every sample of one prompt)."""
        with self._lock:
            try:
                return self._map(tasks, keys)
            except BaseException:
                self._shutdown(self._workers)  # busy workers would answer a later call with stale replies
                raise

    def _queues(self, tasks: Sequence, keys: Sequence | None) -> list[collections.deque]:
        """Chunks of task indices per worker: each key's tasks on one worker, keys spread by load."""
        queues = [collections.deque() for _ in self._workers]
        loads = [0] * len(queues)
        groups: dict = {}
        for index in range(len(tasks)):
            groups.setdefault(index if keys is None else keys[index], []).append(index)
        for indices in groups.values():
            slot = loads.index(min(loads))
            queues[slot].extend(indices[i : i + self.chunk_size] for i in range(0, len(indices), self.chunk_size))
            loads[slot] += len(indices)
        return queues

    def _map(self, tasks: Sequence, keys: Sequence | None) -> list[tuple[str, object]]:
        results: list = [None] * len(tasks)
        while len(self._workers) < min(self.size, max(len(tasks), 1)):
            self._workers.append(self._spawn())
        queues = self._queues(tasks, keys)
        # Every worker we are waiting on: starting up (no chunks) or running a chunk.
        waiting: dict[Connection, _Worker] = {}

        def take(slot: int) -> list[int] | None:
            if queues[slot]:
                return queues[slot].popleft()
            longest = max(queues, key=len)  # idle: help the busiest worker from the far end of its queue
            return longest.pop() if longest else None

        def dispatch(worker: _Worker) -> None:
            """Top the worker up to two chunks: the one it runs and the next."""
            slot = self._workers.index(worker)
            if not worker.ready:
                if any(queues):  # a worker still starting up is picked up by a later map()
                    waiting[worker.conn] = worker
                return
            while len(worker.chunks) < 2 and any(queues):
                chunk = take(slot)
                try:
                    worker.conn.send([tasks[index] for index in chunk])
                except (OSError, ValueError):  # died: give the chunk back
                    queues[slot].appendleft(chunk)
                    if not worker.chunks:  # else reading its replies will find it dead
                        dispatch(self._replace(worker))
                    break
                if not worker.chunks:  # idle until now: its first task starts now
                    worker.deadline = time.monotonic() + self.timeout_s
                worker.chunks.append(collections.deque(chunk))
            if worker.chunks:
                waiting[worker.conn] = worker

        unsettled = len(tasks)

        def settle(worker: _Worker, outcome: tuple[str, object]) -> None:
            nonlocal unsettled
            if not worker.chunks:  # it never came up
                raise RuntimeError(f"checker worker failed to start: {outcome[1]}")
            results[worker.chunks[0].popleft()] = outcome
            if not worker.chunks[0]:
                worker.chunks.popleft()
            unsettled -= 1

        def give_up(worker: _Worker, outcome: tuple[str, object]) -> None:
            """Settle the worker's current task, requeue the rest of its chunks, replace the worker."""
            settle(worker, outcome)
            queues[self._workers.index(worker)].extendleft(list(chunk) for chunk in reversed(worker.chunks))
            worker.chunks.clear()
            dispatch(self._replace(worker))
            for idle in list(self._workers):  # workers that ran dry may take the requeued chunk
                if idle.ready and idle.conn not in waiting:
                    dispatch(idle)

        for worker in list(self._workers):
            dispatch(worker)
        while unsettled:  # a replacement still starting when all is done is picked up by a later map()
            nearest = min(w.deadline for w in waiting.values())
            for conn in wait(list(waiting), timeout=max(0.0, nearest - time.monotonic())):
                worker = waiting.pop(conn)
                try:
                    status, value, finished_at = conn.recv()
                except (EOFError, OSError):  # crashed, e.g. on the memory limit
                    give_up(worker, (ERROR, "worker process died"))
                    continue
                if status == "ready":
                    worker.ready = True
                else:
                    settle(worker, (status, value))
                    worker.deadline = min(finished_at, time.monotonic()) + self.timeout_s  # the next task's
                dispatch(worker)
            now = time.monotonic()
            for conn, worker in list(waiting.items()):
                # poll(): a reply that arrived after wait() returned is not a timeout
                if worker.deadline <= now and not conn.poll():
                    del waiting[conn]
                    give_up(worker, (TIMEOUT, None))
        return results

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        self.restarts += 1
        fresh = self._spawn()
        self._workers[self._workers.index(worker)] = fresh
        return fresh
