"""What a sandbox service and its clients say to each other: jobs in, verdicts out, as JSON.

One module for both sides (``k2rl sandbox serve`` and the ``remote`` backend), so they cannot drift
apart. A request is ``POST /v1/jobs`` with ``{"jobs": [job, ...]}``, each job one of::

    {"id": "7", "mode": "tests", "program": SRC, "tests": SRC, "timeout_s": 10.0}
    {"id": "8", "mode": "io", "program": SRC, "cases": [[STDIN, EXPECTED_STDOUT], ...], "timeout_s": 10.0}

and the answer is ``{"verdicts": [{"id": "7", "verdict": {...}}, ...]}`` in request order. The
server validates a whole batch before any job of it reaches a worker (:func:`parse_batch`): one bad
job refuses the batch with a message naming the job and the field, because a half-run batch would
leave the client unsure which verdicts it has.

Nothing here imports a web library: the client side is the standard library only, so a trainer
needs no extra package to use a remote sandbox.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from k2rl.errors import K2RLError
from k2rl.sandboxes.verdict import STATUSES, Verdict

JOBS_PATH = "/v1/jobs"
TOKEN_ENV = "K2RL_SANDBOX_TOKEN"
TOKEN_FILE_ENV = "K2RL_SANDBOX_TOKEN_FILE"
MAX_ID_CHARS = 64
MAX_NUMBER_CHARS = 32  # no field needs a longer number; a 400-digit one is an attack on the parser


class BadRequest(ValueError):
    """A request the server refuses with 400; the message says what is wrong, in one line."""


@dataclass(frozen=True)
class Job:
    id: str
    mode: str  # "tests" or "io"
    program: str
    timeout_s: float
    tests: str = ""
    cases: tuple[tuple[str, str], ...] = ()

    @property
    def budget_s(self) -> float:
        """The longest the sandbox may spend on this job (io: the timeout applies per case)."""
        return self.timeout_s * (len(self.cases) if self.mode == "io" else 1)

    def to_json(self) -> dict:
        body = {"id": self.id, "mode": self.mode, "program": self.program, "timeout_s": self.timeout_s}
        if self.mode == "io":
            body["cases"] = [list(case) for case in self.cases]
        else:
            body["tests"] = self.tests
        return body


def _string(job: dict, key: str, where: str) -> str:
    value = job.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"{where}.{key} must be a string, got {_kind(value)}")
    return value


def _kind(value) -> str:
    return "nothing" if value is None else type(value).__name__


def _timeout(job: dict, where: str, max_timeout_s: float) -> float:
    value = job.get("timeout_s")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise BadRequest(f"{where}.timeout_s must be a positive number of seconds, got {value!r}")
    if value > max_timeout_s:
        raise BadRequest(f"{where}.timeout_s is {value:g}s; this server's per-job deadline is {max_timeout_s:g}s")
    return float(value)


def _cases(job: dict, where: str, max_cases: int) -> tuple[tuple[str, str], ...]:
    cases = job.get("cases")
    if not isinstance(cases, list) or not cases:
        raise BadRequest(f"{where}.cases must be a non-empty list of [stdin, expected_stdout], got {_kind(cases)}")
    if len(cases) > max_cases:
        raise BadRequest(f"{where}.cases has {len(cases)} cases; this server takes at most {max_cases}")
    for n, case in enumerate(cases):
        if not (isinstance(case, list) and len(case) == 2 and all(isinstance(x, str) for x in case)):
            raise BadRequest(f"{where}.cases[{n}] must be [stdin, expected_stdout] (two strings)")
    return tuple((stdin, expected) for stdin, expected in cases)


def parse_job(job, n: int, max_timeout_s: float, max_cases: int) -> Job:
    where = f"jobs[{n}]"
    if not isinstance(job, dict):
        raise BadRequest(f"{where} must be an object, got {_kind(job)}")
    job_id = job.get("id")
    if not isinstance(job_id, str) or not 0 < len(job_id) <= MAX_ID_CHARS:
        raise BadRequest(f"{where}.id must be a string of 1-{MAX_ID_CHARS} characters")
    mode = job.get("mode")
    if mode not in ("tests", "io"):
        raise BadRequest(f"{where}.mode must be 'tests' or 'io', got {mode!r}")
    program, timeout_s = _string(job, "program", where), _timeout(job, where, max_timeout_s)
    if mode == "tests":
        return Job(job_id, mode, program, timeout_s, tests=_string(job, "tests", where))
    return Job(job_id, mode, program, timeout_s, cases=_cases(job, where, max_cases))


def _number(kind):
    def parse(text: str):
        if len(text) > MAX_NUMBER_CHARS:
            raise BadRequest(f"a number of {len(text)} characters in the body; at most {MAX_NUMBER_CHARS}")
        return kind(text)
    return parse


def _no_constant(name: str):
    raise BadRequest(f"{name} is not a number this server takes")


def parse_batch(body: bytes, *, max_batch: int, max_timeout_s: float, max_cases: int) -> list[Job]:
    """The jobs of a request body, all validated; :class:`BadRequest` naming the first problem."""
    try:
        data = json.loads(body, parse_int=_number(int), parse_float=_number(float), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"the body is not JSON ({getattr(exc, 'msg', exc)})") from None
    except RecursionError:
        raise BadRequest("the body is nested too deeply") from None
    if not isinstance(data, dict) or "jobs" not in data:
        raise BadRequest('the body must be an object {"jobs": [...]}')
    jobs = data["jobs"]
    if not isinstance(jobs, list) or not jobs:
        raise BadRequest("jobs must be a non-empty list")
    if len(jobs) > max_batch:
        raise BadRequest(f"a batch of {len(jobs)} jobs; this server takes at most {max_batch} per request")
    parsed = [parse_job(job, n, max_timeout_s, max_cases) for n, job in enumerate(jobs)]
    if len({job.id for job in parsed}) != len(parsed):
        raise BadRequest("job ids must be unique within a batch")
    return parsed


def verdict_to_json(verdict: Verdict) -> dict:
    return {"passed": verdict.passed, "status": str(verdict.status), "stdout": verdict.stdout, "stderr": verdict.stderr,
            "duration_s": verdict.duration_s, "detail": verdict.detail,
            "cases": [verdict.cases_passed, verdict.cases_total]}


def verdicts_from_response(data, ids: list[str]) -> list[Verdict]:
    """The verdicts of a response for the jobs ``ids``; ValueError when the response does not match them."""
    items = data.get("verdicts") if isinstance(data, dict) else None
    if not isinstance(items, list) or [i.get("id") if isinstance(i, dict) else None for i in items] != ids:
        raise ValueError("the response does not answer the jobs sent (ids differ)")
    verdicts = []
    for item in items:
        body = item.get("verdict")
        if not isinstance(body, dict) or body.get("status") not in STATUSES:
            raise ValueError(f"job {item['id']}: not a verdict")
        verdicts.append(Verdict.from_dict(body))
    return verdicts


def resolve_token(token: str | None = None, token_file: str | os.PathLike | None = None) -> str | None:
    """The bearer token: given, else read from ``token_file``, else ``$K2RL_SANDBOX_TOKEN`` or its file."""
    if token and token.strip():
        return token.strip()
    token_file = token_file or os.environ.get(TOKEN_FILE_ENV)
    if token_file:
        try:
            text = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise K2RLError(f"cannot read the sandbox token file {token_file}: {exc.strerror or exc}") from None
        if not text:
            raise K2RLError(f"the sandbox token file {token_file} is empty")
        return text
    return (os.environ.get(TOKEN_ENV) or "").strip() or None
