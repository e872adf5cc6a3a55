"""``k2rl sandbox serve`` as a service: refusals never reach a worker, metrics, drain, start-up rules."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading

import pytest
from remote_support import TOKEN, Server, start_servers, wait_until, write_token

from k2rl.errors import K2RLError
from k2rl.sandboxes import get_sandbox

GOOD_JOB = {"id": "1", "mode": "tests", "program": "def f():\n    return 1\n", "tests": "assert f() == 1\n",
            "timeout_s": 5}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    (server,) = start_servers(1, write_token(tmp_path_factory), workers=1)
    yield server
    server.stop()


def _jobs(*jobs) -> bytes:
    return json.dumps({"jobs": list(jobs)}).encode()


MALFORMED = {
    "not JSON": (b"{jobs: nope", "not JSON"),
    "no jobs key": (b'{"work": []}', '{"jobs": [...]}'),
    "empty batch": (_jobs(), "non-empty"),
    "program not a string": (_jobs({**GOOD_JOB, "program": 7}), "jobs[0].program must be a string"),
    "unknown mode": (_jobs({**GOOD_JOB, "mode": "shell"}), "jobs[0].mode"),
    "timeout over the deadline": (_jobs({**GOOD_JOB, "timeout_s": 3600}), "per-job deadline"),
    "negative timeout": (_jobs({**GOOD_JOB, "timeout_s": -1}), "jobs[0].timeout_s"),
    "io without cases": (_jobs({"id": "2", "mode": "io", "program": "print(1)", "timeout_s": 5}), "jobs[0].cases"),
    "bad case": (_jobs({"id": "2", "mode": "io", "program": "print(1)", "cases": [["a"]], "timeout_s": 5}),
                 "jobs[0].cases[0]"),
    "duplicate ids": (_jobs(GOOD_JOB, GOOD_JOB), "unique"),
    "second job bad": (_jobs(GOOD_JOB, {**GOOD_JOB, "id": "9", "tests": None}), "jobs[1].tests"),
    "batch over the limit": (_jobs(*({**GOOD_JOB, "id": str(i)} for i in range(300))), "at most 256"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_bodies_get_a_clear_400_and_reach_no_worker(server, case):
    body, message = MALFORMED[case]
    before = server.metrics()["jobs"]
    status, data = server.request("POST", "/v1/jobs", body)
    assert status == 400 and message in data["error"] and "\n" not in data["error"], data
    assert server.metrics()["jobs"] == before


def test_wrong_or_missing_token_is_401_and_reaches_no_worker(server):
    before = server.metrics()["jobs"]
    for token in ("wrong", None, TOKEN + "x", TOKEN[:-1]):
        status, data = server.request("POST", "/v1/jobs", _jobs(GOOD_JOB), token=token)
        assert status == 401 and "token" in data["error"], (token, data)
    assert server.request("GET", "/metrics", token="wrong")[0] == 401
    assert server.metrics()["jobs"] == before
    assert server.metrics()["responses"]["401"] >= 5


def test_oversized_request_is_413_and_reaches_no_worker(server):
    before = server.metrics()["jobs"]
    size = 17 << 20  # over the 16 MB default
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\n").encode()
    body = b'{"jobs": [{"id": "1", "mode": "tests", "tests": "", "timeout_s": 1, "program": "' + b"x" * size + b'"}]}'
    declared = head + f"Content-Length: {len(body)}\r\n\r\n".encode()
    assert server.raw_post(declared, [body[i:i + (1 << 20)] for i in range(0, len(body), 1 << 20)]) == 413
    # a chunked upload declares no length: the limit still holds while reading
    chunked = head + b"Transfer-Encoding: chunked\r\n\r\n"
    chunks = [b"%x\r\n%s\r\n" % (len(body[i:i + (1 << 20)]), body[i:i + (1 << 20)])
              for i in range(0, len(body), 1 << 20)] + [b"0\r\n\r\n"]
    assert server.raw_post(chunked, chunks) == 413
    assert server.metrics()["jobs"] == before
    assert server.metrics()["responses"]["413"] == 2


def test_a_good_batch_runs_and_metrics_describe_it(server):
    before = server.metrics()
    jobs = [{**GOOD_JOB, "id": "a"}, {**GOOD_JOB, "id": "b", "tests": "assert f() == 2\n"},
            {"id": "c", "mode": "io", "program": "print(input())", "cases": [["x\n", "x\n"]], "timeout_s": 5}]
    status, data = server.request("POST", "/v1/jobs", _jobs(*jobs))
    assert status == 200, data
    assert [(v["id"], v["verdict"]["status"]) for v in data["verdicts"]] == [("a", "passed"), ("b", "failed"), ("c", "passed")]
    after = server.metrics()
    assert after["jobs"]["started"] - before["jobs"]["started"] == 3
    assert after["verdicts"]["passed"] - before["verdicts"].get("passed", 0) == 2
    assert after["verdicts"]["failed"] - before["verdicts"].get("failed", 0) == 1
    assert {"p50", "p90", "p99"} <= set(after["latency_ms"]) and after["latency_ms"]["p50"] > 0
    assert after["pool"]["workers"] == 1 and 0 <= after["pool"]["occupancy"] <= 1
    status, health = server.request("GET", "/healthz", token=None)  # open: a load balancer's probe
    assert status == 200 and health["status"] == "ok"


def test_drain_finishes_in_flight_jobs_and_refuses_new_ones(tmp_path_factory):
    (server,) = start_servers(1, write_token(tmp_path_factory), workers=1)
    slow = {**GOOD_JOB, "id": "slow", "program": "import time\ndef f():\n    time.sleep(1.5)\n    return 1\n"}
    answer = {}
    thread = threading.Thread(target=lambda: answer.update(r=server.request("POST", "/v1/jobs", _jobs(slow))))
    try:
        thread.start()
        wait_until(lambda: server.metrics()["jobs"]["started"] > 0, "the slow job to start")
        server.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: server.request("GET", "/healthz", token=None)[0] == 503, "/healthz to report draining")
        status, data = server.request("POST", "/v1/jobs", _jobs(GOOD_JOB))
        assert status == 503 and "draining" in data["error"]
        thread.join()
        status, data = answer["r"]
        assert status == 200 and data["verdicts"][0]["verdict"]["status"] == "passed", data
        assert server.proc.wait(timeout=60) == 0
    finally:
        server.stop()


def _serve(*args: str, env_token: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    if env_token:
        env["K2RL_SANDBOX_TOKEN"] = env_token
    return subprocess.run([sys.executable, "-m", "k2rl.cli", "sandbox", "serve", "--port", "0", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_serve_refuses_to_start_without_a_token():
    result = _serve("--host", "127.0.0.1")
    assert result.returncode == 2 and "needs a token" in result.stderr and result.stderr.count("\n") == 1
    result = _serve("--host", "0.0.0.0", "--insecure-loopback")
    assert result.returncode == 2 and "loopback" in result.stderr and result.stderr.count("\n") == 1
    result = _serve("--token-file", "/nonexistent/token")
    assert result.returncode == 2 and "cannot read the sandbox token file" in result.stderr


def test_insecure_loopback_serves_without_a_token():
    server = Server(None, workers=1, extra=("--insecure-loopback",))
    try:
        status, data = server.request("POST", "/v1/jobs", _jobs(GOOD_JOB), token=None)
        assert status == 200 and data["verdicts"][0]["verdict"]["passed"]
    finally:
        server.stop()


def test_remote_backend_user_errors_are_one_line(monkeypatch, server):
    monkeypatch.delenv("K2RL_SANDBOX_ENDPOINTS", raising=False)
    with pytest.raises(K2RLError, match="needs endpoints"):
        get_sandbox("remote")
    with pytest.raises(K2RLError, match="not http"):
        get_sandbox("remote", endpoints=["ftp://x:1"])
    with pytest.raises(K2RLError, match="serve --workers"):
        get_sandbox("remote", endpoints=[server.url], workers=2)
    with pytest.raises(K2RLError, match="refused the request \\(401\\)"):
        get_sandbox("remote", endpoints=[server.url], token="wrong").run_tests("x = 1\n", "assert x\n")
    with pytest.raises(K2RLError, match="must be a str"):
        get_sandbox("remote", endpoints=[server.url], token=TOKEN).run_tests(b"x", "assert True")


def test_endpoints_and_token_from_the_environment(monkeypatch, server):
    monkeypatch.setenv("K2RL_SANDBOX_ENDPOINTS", f" {server.url} ,")
    monkeypatch.setenv("K2RL_SANDBOX_TOKEN", TOKEN)
    with get_sandbox("remote") as sandbox:
        assert sandbox.run_tests("def f():\n    return 1\n", "assert f() == 1\n").passed


def test_no_reachable_endpoint_is_an_infrastructure_verdict_naming_the_cause():
    sandbox = get_sandbox("remote", endpoints=["127.0.0.1:9"], token=TOKEN, retry_window_s=1.0)
    verdict = sandbox.run_tests("def f():\n    return 1\n", "assert f() == 1\n")
    assert verdict.status == "sandbox_error" and verdict.infrastructure_failure and not verdict.passed
    assert "127.0.0.1:9" in verdict.detail and "refused" in verdict.detail.lower()
