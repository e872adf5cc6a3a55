"""The ``remote`` backend: the Sandbox contract, with verdicts from ``k2rl sandbox serve`` servers.

    sb = get_sandbox("remote", endpoints=["http://10.0.0.5:8780", ...], token=...)
    sb.run_tests_many(pairs)          # same calls, same frozen Verdicts, in input order

Endpoints default to ``$K2RL_SANDBOX_ENDPOINTS`` (comma-separated) and the token to
``$K2RL_SANDBOX_TOKEN`` (or the file named by ``$K2RL_SANDBOX_TOKEN_FILE``), so a recipe can say
``rollout.sandbox: remote`` and keep addresses and secrets out of its YAML.

Jobs travel in batches of ``batch_size``; every request is answered whole or not at all. A batch that
meets a dead, draining or failing server is sent again to another endpoint (:mod:`.endpoints`
picks it); from a successful answer, only the jobs that got ``sandbox_error`` (an infrastructure
failure, not a judgement) are sent again. So each job's verdict comes from exactly one answer: the
first one that judged it wins, and a late answer cannot exist, because jobs are only sent again
after their previous attempt has ended. A batch that no endpoint answers within ``retry_window_s`` (or
``max_attempts``) gets ``sandbox_error`` verdicts naming the last cause -- the vocabulary's
infrastructure status, so rewards score it ``None``; a pass or fail is never made up for a job
that no harness judged. A refused token (401) or a request the server calls malformed (400, 413) is
a configuration error and raises :class:`K2RLError` instead: retrying cannot fix it.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from k2rl.errors import K2RLError
from k2rl.sandboxes.endpoints import Endpoint, EndpointPool
from k2rl.sandboxes.pool import _check_text as check_text
from k2rl.sandboxes.service_protocol import JOBS_PATH, Job, resolve_token, verdicts_from_response
from k2rl.sandboxes.verdict import Status, Verdict

ENDPOINTS_ENV = "K2RL_SANDBOX_ENDPOINTS"
SLACK_S = 30.0  # beyond a batch's own budget before a silent server counts as failed
_RETRYABLE = (OSError, http.client.HTTPException, ValueError)  # refused/reset/timeout, broken HTTP, bad body


class _Retry(Exception):
    """This endpoint did not answer the batch; another may."""


def _endpoints(endpoints) -> list[str]:
    if endpoints is None:
        endpoints = [e.strip() for e in os.environ.get(ENDPOINTS_ENV, "").split(",") if e.strip()]
    elif isinstance(endpoints, str):
        endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
    if not endpoints:
        raise K2RLError(f"the remote sandbox needs endpoints: endpoints=[...] or ${ENDPOINTS_ENV}=HOST:PORT,...")
    return list(endpoints)


class RemoteSandbox:
    """Options: ``endpoints``, ``token`` / ``token_file``, ``per_endpoint`` (batches in flight per
    server), ``batch_size`` (jobs per request), ``retry_window_s`` and ``max_attempts`` (per batch),
    ``connect_timeout_s``."""

    backend = "remote"

    def __init__(self, endpoints=None, *, token: str | None = None, token_file: str | None = None,
                 per_endpoint: int = 4, batch_size: int = 16, retry_window_s: float = 120.0,
                 max_attempts: int | None = None, connect_timeout_s: float = 5.0, **unknown):
        if unknown:
            hint = " (the pool size is the server's: k2rl sandbox serve --workers)" if "workers" in unknown else ""
            raise K2RLError(f"remote sandbox has no option(s) {sorted(unknown)}{hint}")
        for name, value in (("per_endpoint", per_endpoint), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise K2RLError(f"remote sandbox option {name} must be a positive integer, got {value!r}")
        self._pool = EndpointPool(_endpoints(endpoints), per_endpoint)
        self._token = resolve_token(token, token_file)
        self.batch_size, self.retry_window_s, self.connect_timeout_s = batch_size, retry_window_s, connect_timeout_s
        self.max_attempts = max_attempts or 3 * len(self._pool.endpoints)
        self.workers = per_endpoint * len(self._pool.endpoints)  # batches this client keeps in flight
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.stats = {"batches": 0, "retries": 0, "verdicts": 0, "unanswered": 0}

    # -- lifecycle (same shape as the local Sandbox)
    def start(self) -> "RemoteSandbox":
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="k2rl-remote")
        return self

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        self._pool.close()

    def __enter__(self) -> "RemoteSandbox":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the contract
    def run_tests(self, program: str, tests: str, timeout_s: float = 10.0) -> Verdict:
        """As :meth:`k2rl.sandboxes.pool.Sandbox.run_tests`, judged by a server's harness."""
        return self.run_tests_many([(program, tests)], timeout_s)[0]

    def run_tests_many(self, pairs, timeout_s: float = 10.0) -> list[Verdict]:
        jobs = [Job(str(n), "tests", _text(p, "program"), float(timeout_s), tests=_text(t, "tests"))
                for n, (p, t) in enumerate(pairs)]
        return self._many(jobs)

    def run_io(self, program: str, cases, timeout_s: float = 10.0) -> Verdict:
        """As :meth:`k2rl.sandboxes.pool.Sandbox.run_io`, judged by a server's harness."""
        return self.run_io_many([(program, cases)], timeout_s)[0]

    def run_io_many(self, items, timeout_s: float = 10.0) -> list[Verdict]:
        jobs = []
        for n, (program, cases) in enumerate(items):
            cases = tuple((str(stdin), str(expected)) for stdin, expected in cases)
            if not cases:
                raise K2RLError("run_io needs at least one (stdin, expected_stdout) case")
            jobs.append(Job(str(n), "io", _text(program, "program"), float(timeout_s), cases=cases))
        return self._many(jobs)

    # -- dispatch
    def _many(self, jobs: list[Job]) -> list[Verdict]:
        if not jobs:
            return []
        self.start()
        batches = [jobs[i:i + self.batch_size] for i in range(0, len(jobs), self.batch_size)]
        verdicts: dict[str, Verdict] = {}
        for batch, answer in zip(batches, self._executor.map(self._settle, batches)):
            for job, verdict in zip(batch, answer):
                if job.id in verdicts:  # cannot happen by construction; a duplicate would be a bug here
                    raise RuntimeError(f"remote sandbox: job {job.id} answered twice")
                verdicts[job.id] = verdict
        with self._lock:
            self.stats["verdicts"] += len(verdicts)
        return [verdicts[job.id] for job in jobs]

    def _settle(self, batch: list[Job]) -> list[Verdict]:
        """The batch's verdicts: each job's from the first answer that judged it, else ``sandbox_error``.

        Only jobs without a judgement are sent again: all of them when a request failed (no answer,
        or an answer that is not one), only those answered ``sandbox_error`` when it succeeded -- a
        job that ran and got its verdict never runs twice.
        """
        settled: dict[str, Verdict] = {}
        last: dict[str, Verdict] = {}  # the latest sandbox_error a server gave a job, kept if nothing better comes
        pending = list(batch)
        deadline = time.monotonic() + self.retry_window_s
        failed: set[str] = set()
        cause = "no endpoint was free"
        for attempt in range(self.max_attempts):
            endpoint = self._pool.acquire(failed, deadline)
            if endpoint is None:
                break
            if attempt:
                with self._lock:
                    self.stats["retries"] += 1
            body = json.dumps({"jobs": [job.to_json() for job in pending]}, ensure_ascii=False).encode()
            read_timeout = sum(job.budget_s for job in pending) + SLACK_S
            try:
                verdicts = self._post(endpoint, body, [job.id for job in pending], read_timeout)
            except _Retry as exc:
                self._pool.release(endpoint, ok=False)
                failed.add(endpoint.name)
                cause = f"{endpoint.name}: {exc}"
                continue
            except BaseException:
                self._pool.release(endpoint, ok=True)
                raise
            self._pool.release(endpoint, ok=True)
            with self._lock:
                self.stats["batches"] += 1
            for job, verdict in zip(pending, verdicts):
                (last if verdict.infrastructure_failure else settled)[job.id] = verdict
            pending = [job for job in pending if job.id not in settled]
            if not pending:
                break
            cause = f"{endpoint.name}: {last[pending[0].id].detail[:200]}"
        if pending:
            with self._lock:
                self.stats["unanswered"] += len(pending)
        detail = f"remote sandbox: no endpoint gave a verdict ({cause})"
        return [settled.get(job.id) or last.get(job.id) or Verdict(False, Status.SANDBOX_ERROR, detail=detail)
                for job in batch]

    def _post(self, endpoint: Endpoint, body: bytes, ids: list[str], read_timeout: float) -> list[Verdict]:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        for fresh_try in (False, True):
            conn = None
            try:
                conn, reused = endpoint.connection(self.connect_timeout_s, read_timeout)
                conn.request("POST", JOBS_PATH, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except _RETRYABLE as exc:
                if conn is None:  # could not connect at all
                    raise _Retry(_describe(exc)) from None
                conn.close()
                if reused and not fresh_try and isinstance(exc, (http.client.RemoteDisconnected, ConnectionError)):
                    continue  # an idle keep-alive connection the server had closed: not the server's death
                raise _Retry(_describe(exc)) from None
            break
        if response.status == 200:
            try:
                verdicts = verdicts_from_response(json.loads(data), ids)
            except ValueError as exc:
                conn.close()
                raise _Retry(f"unusable answer: {exc}") from None
            endpoint.keep(conn)
            return verdicts
        conn.close()
        message = _server_message(data)
        if response.status in (400, 401, 403, 413):
            raise K2RLError(f"remote sandbox {endpoint.name} refused the request ({response.status}): {message}")
        raise _Retry(f"HTTP {response.status}: {message}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _server_message(data: bytes) -> str:
    try:
        return str(json.loads(data)["error"])[:300]
    except (ValueError, KeyError, TypeError):
        return data[:200].decode("utf-8", "replace") or "no message"


def _text(value, what: str) -> str:
    check_text(value, what)
    return value
