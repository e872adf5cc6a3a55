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
:attr:`SandboxService.drained` is set once none is left.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web

from k2rl.sandboxes.service_metrics import ServiceMetrics
from k2rl.sandboxes.service_protocol import JOBS_PATH, BadRequest, Job, parse_batch, verdict_to_json
from k2rl.sandboxes.verdict import Status, Verdict


@dataclass(frozen=True)
class ServiceLimits:
    max_body_bytes: int = 16 << 20
    max_batch: int = 256
    max_timeout_s: float = 60.0  # the per-job deadline: a job may ask for at most this much
    max_cases: int = 256  # stdin/stdout cases per job


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
        self._token = token.encode() if token else None
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
        self.metrics.response(response.status)
        return response

    def _authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self._token)

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
        self.in_flight += 1  # from here the batch is ours: a drain waits for its answer
        try:
            body = await request.read()
            try:
                jobs = parse_batch(body, max_batch=self.limits.max_batch, max_timeout_s=self.limits.max_timeout_s,
                                   max_cases=self.limits.max_cases)
            except BadRequest as exc:
                return _error(400, str(exc))
            self.metrics.accepted(len(jobs))
            loop = asyncio.get_running_loop()
            verdicts = await asyncio.gather(*(loop.run_in_executor(self._executor, self._run, job) for job in jobs))
            return web.json_response(
                {"verdicts": [{"id": job.id, "verdict": verdict_to_json(v)} for job, v in zip(jobs, verdicts)]},
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

    # -- lifecycle
    def drain(self) -> None:
        """Refuse new work from now on; :attr:`drained` is set once accepted batches are answered."""
        self.draining = True
        if self.in_flight == 0:
            self.drained.set()

    async def _close(self, app) -> None:
        self._executor.shutdown(wait=True)
