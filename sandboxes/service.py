"""``k2rl sandbox serve``'s HTTP application: the Sandbox contract behind bearer-token auth.

Library: aiohttp -- a maintained asyncio HTTP server with request-size limits and graceful shutdown
built in, and nothing else to configure (no ASGI server to pair it with).

The event loop only parses, checks and answers; every job runs on a thread of a pool as wide as the
sandbox's, where it blocks on a warm harness exactly as a local ``run_tests`` call does. So the
verdict is the server's trusted harness's, decided as it is locally; the service adds transport.

Order of checks on ``POST /v1/jobs``, each before any job reaches a worker: draining (503, so the
client retries elsewhere), the bearer token (401, compared in constant time), the declared and actual
body size (413), then the whole batch's validity (400 naming the job and field).

Draining (:meth:`SandboxService.drain`, on SIGTERM): ``/healthz`` turns 503 so a load balancer stops
routing here, new batches get 503, and batches already accepted run to completion and are answered;
:attr:`SandboxService.drained` is set once none is left. A batch is accepted once its whole body has
arrived (within ``body_timeout_s``), so a client stalled mid-body never holds a drain up.

Nothing a request carries is trusted at the edges either: a blank token is no token, an
Authorization header that is not even text is a 401, a body nested or numbered beyond reason is a
400, a verdict that cannot be encoded becomes that job's ``sandbox_error`` (never the batch's), every
non-2xx answer is counted in ``/metrics``, and nothing of a refused request reaches a log line
(:class:`ServerLog`: aiohttp would log a malformed header line whole, token included).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from k2rl.errors import K2RLError
from k2rl.sandboxes.service_metrics import ServiceMetrics
from k2rl.sandboxes.service_protocol import JOBS_PATH, BadRequest, Job, parse_batch, verdict_to_json
from k2rl.sandboxes.verdict import Status, Verdict


@dataclass(frozen=True)
class ServiceLimits:
    max_body_bytes: int = 16 << 20
    max_batch: int = 256
    max_timeout_s: float = 60.0  # the per-job deadline: a job may ask for at most this much
    max_cases: int = 256  # stdin/stdout cases per job
    body_timeout_s: float = 60.0  # a body that has not fully arrived by then is refused (408)


def _error(status: int, message: str, **headers) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _too_large(message: str) -> web.Response:
    """413, then close: the rest of the body is never read, so the connection cannot be reused."""
    response = _error(413, message)
    response.force_close()
    return response


class SandboxService:
    """Serves one :class:`~k2rl.sandboxes.pool.Sandbox` (already started) over HTTP."""

    def __init__(self, sandbox, token: str | None, limits: ServiceLimits = ServiceLimits()):
        self.sandbox, self.limits = sandbox, limits
        if token is not None and not token.strip():
            raise K2RLError("the sandbox service token is blank; give a real one (or none, with --insecure-loopback)")
        self._token = token.strip().encode() if token else None
        self.metrics = ServiceMetrics(sandbox.workers)
        self._executor = ThreadPoolExecutor(sandbox.workers, thread_name_prefix="k2rl-job")
        self.draining = False
        self.in_flight = 0  # accepted batches not yet answered
        self.drained = asyncio.Event()

    # -- application
    def app(self) -> web.Application:
        # aiohttp enforces client_max_size on reading the body, for chunked uploads too
        app = web.Application(client_max_size=self.limits.max_body_bytes, middlewares=[self._count_responses])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_view)
        app.router.add_post(JOBS_PATH, self.run_jobs)
        app.on_cleanup.append(self._close)
        return app

    @web.middleware
    async def _count_responses(self, request, handler):
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # aiohttp's own 404/405/413 ...
            self.metrics.response(exc.status)
            if exc.status == 413:
                return _too_large(f"request body over this server's limit of {self.limits.max_body_bytes} bytes")
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a server bug: answered and counted, its text not echoed
            logging.getLogger("k2rl.sandbox.serve").error("internal error on %s: %s", request.path, type(exc).__name__)
            response = _error(500, "internal error")
        self.metrics.response(response.status)
        return response

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        try:  # a header with bytes that are not UTF-8 arrives with surrogate escapes: never a match
            header = request.headers.get("Authorization", "").encode("utf-8")
        except UnicodeEncodeError:
            return False
        scheme, _, given = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token)

    def _unauthorized(self) -> web.Response:
        return _error(401, "missing or wrong bearer token", **{"WWW-Authenticate": 'Bearer realm="k2rl-sandbox"'})

    # -- endpoints
    async def healthz(self, request: web.Request) -> web.Response:
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        return web.json_response({"status": "ok", "backend": self.sandbox.backend, "workers": self.sandbox.workers})

    async def metrics_view(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._unauthorized()
        return web.json_response(self.metrics.snapshot(draining=self.draining, requests_in_flight=self.in_flight))

    async def run_jobs(self, request: web.Request) -> web.Response:
        if self.draining:
            return _error(503, "draining: this server takes no new jobs", **{"Retry-After": "1"})
        if not self._authorized(request):
            return self._unauthorized()
        declared = request.content_length
        if declared is not None and declared > self.limits.max_body_bytes:
            return _too_large(f"request body of {declared} bytes; this server's limit is {self.limits.max_body_bytes}")
        try:
            body = await asyncio.wait_for(request.read(), self.limits.body_timeout_s)
        except asyncio.TimeoutError:
            response = _error(408, f"the body did not arrive within {self.limits.body_timeout_s:g} s")
            response.force_close()
            return response
        if self.draining:  # the body arrived after the drain began: not ours
            return _error(503, "draining: this server takes no new jobs", **{"Retry-After": "1"})
        self.in_flight += 1  # from here the batch is ours: a drain waits for its answer
        try:
            try:
                jobs = parse_batch(body, max_batch=self.limits.max_batch, max_timeout_s=self.limits.max_timeout_s,
                                   max_cases=self.limits.max_cases)
            except BadRequest as exc:
                return _error(400, str(exc))
            self.metrics.accepted(len(jobs))
            loop = asyncio.get_running_loop()
            verdicts = await asyncio.gather(*(loop.run_in_executor(self._executor, self._run, job) for job in jobs))
            return web.json_response({"verdicts": [{"id": job.id, "verdict": _encodable(v)} for job, v in zip(jobs, verdicts)]},
                                     dumps=lambda obj: json.dumps(obj, ensure_ascii=False))
        finally:
            self.in_flight -= 1
            if self.draining and self.in_flight == 0:
                self.drained.set()

    def _run(self, job: Job) -> Verdict:
        """One job on a sandbox worker (runs on an executor thread)."""
        self.metrics.job_started()
        start = time.monotonic()
        try:
            if job.mode == "tests":
                verdict = self.sandbox.run_tests(job.program, job.tests, timeout_s=job.timeout_s)
            else:
                verdict = self.sandbox.run_io(job.program, list(job.cases), timeout_s=job.timeout_s)
        except Exception as exc:  # noqa: BLE001 - a server bug must not be read as the program's verdict
            verdict = Verdict(False, Status.SANDBOX_ERROR, detail=f"the sandbox service failed: {type(exc).__name__}: {exc}")
        self.metrics.job_finished(verdict.status, time.monotonic() - start)
        return verdict

    def server_log(self) -> "ServerLog":
        return ServerLog(self.metrics)

    # -- lifecycle
    def drain(self) -> None:
        """Refuse new work from now on; :attr:`drained` is set once accepted batches are answered."""
        self.draining = True
        if self.in_flight == 0:
            self.drained.set()

    async def _close(self, app) -> None:
        self._executor.shutdown(wait=True)


def _encodable(verdict: Verdict) -> dict:
    """The verdict's JSON, checked to encode; one that cannot is that job's ``sandbox_error``."""
    try:
        body = verdict_to_json(verdict)
        json.dumps(body, ensure_ascii=False).encode("utf-8")
        return body
    except Exception as exc:  # noqa: BLE001 - whatever broke, it is this job's, not the batch's
        return verdict_to_json(Verdict(False, Status.SANDBOX_ERROR, detail=f"the verdict could not be encoded ({type(exc).__name__})"))


class ServerLog:
    """The logger aiohttp's connection handler is given: one line per refused request, no request text.

    aiohttp answers a request it cannot parse (a NUL byte in a header, say) itself, with 400, and
    logs the exception, whose text quotes the offending header line -- an Authorization header,
    token included. Here such an answer is counted in ``/metrics`` and logged by its type only.
    """

    def __init__(self, metrics: ServiceMetrics):
        self.metrics = metrics
        self.log = logging.getLogger("k2rl.sandbox.serve")

    def exception(self, message, *args, exc_info=None, **_kw) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else None
        code = getattr(exc, "code", None)
        self.metrics.response(code if isinstance(code, int) and 400 <= code < 600 else 500)
        self.log.warning("refused a request it could not handle (%s)", type(exc).__name__ if exc else "unknown")

    def debug(self, *args, exc_info=None, **_kw) -> None:
        if isinstance(exc_info, BaseException):  # a request that was not HTTP at all: still an answer
            self.exception("", exc_info=exc_info)

    def _drop(self, *args, **kw) -> None:
        pass

    error = warning = info = _drop
