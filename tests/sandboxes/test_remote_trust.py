"""The trust suite through ``k2rl sandbox serve``: what a token holder can send, and the service's edges.

Attacks from :mod:`test_sandbox_trust` (reused, not copied) through the remote backend; one job's
output never fails its batch nor makes the client run the batch again; a blank token, a header that
is not text, a NUL byte, JSON nested or numbered beyond reason: each a clear 4xx, counted in
``/metrics``, with no secret in any log line; a drain is bounded even with a client stalled mid-body.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from remote_support import TOKEN, Server, start_servers, write_token
from test_sandbox_attacks import HOST_SECRET_FILE, LISTENER
from test_sandbox_attacks import TOKEN as SECRET
from test_sandbox_trust import FIND, HOST_ONLY_FILE, LEAVE, PROGRAM, TEST_ATTACKS

from k2rl.errors import K2RLError
from k2rl.sandboxes import get_sandbox

GOOD = {"id": "1", "mode": "tests", "program": PROGRAM, "tests": "assert solve(3) == 26\n", "timeout_s": 5}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with open(HOST_SECRET_FILE, "w") as handle:
        handle.write(SECRET)
    (server,) = start_servers(1, write_token(tmp_path_factory), workers=2)
    sandbox = get_sandbox("remote", endpoints=[server.url], token=TOKEN, batch_size=16)
    yield server, sandbox
    sandbox.close()
    server.stop()
    os.unlink(HOST_SECRET_FILE)


def _raw(server: Server, request: bytes) -> int:
    """The status of a hand-written request (``http.client`` refuses to send what these send)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(request)
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


def _post(auth: bytes, body: bytes = b"{}") -> bytes:
    return (b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: " + auth + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)


@pytest.mark.parametrize("name", sorted(TEST_ATTACKS))
def test_tests_are_confined_through_the_service(served, name):
    server, sandbox = served
    before = LISTENER.connections
    verdict = sandbox.run_tests(PROGRAM, TEST_ATTACKS[name], timeout_s=5)
    assert not verdict.passed and verdict.status != "sandbox_error", f"{name} through the service: {verdict}"
    assert LISTENER.connections == before and not os.path.exists(HOST_ONLY_FILE)


def test_tests_cannot_read_the_service_token(served, tmp_path_factory):
    server, sandbox = served
    token_file = server.proc.args[server.proc.args.index("--token-file") + 1]
    verdict = sandbox.run_tests(PROGRAM, f"assert open({token_file!r}).read().strip() == {TOKEN!r}\n", timeout_s=5)
    assert not verdict.passed and verdict.status == "failed", verdict


def test_nothing_a_job_leaves_reaches_the_next_through_the_service(served):
    server, sandbox = served
    sandbox.run_tests_many([(LEAVE, "assert solve(3) == 26\n")] * 2, timeout_s=10)  # both workers
    verdicts = sandbox.run_tests_many([(FIND, "assert found()\n")] * 4, timeout_s=10)
    assert all(v.status == "failed" for v in verdicts), verdicts


def test_one_jobs_output_never_fails_its_batch_nor_reruns_it(served):
    server, sandbox = served
    poisoned = "def solve(x):\n    raise ValueError('\\udcff')\n"
    pairs = [(PROGRAM, "assert solve(3) == 26\n")] * 15 + [(poisoned, "assert solve(3) == 26\n")]
    started, retries = server.metrics()["jobs"]["started"], sandbox.stats["retries"]
    verdicts = sandbox.run_tests_many(pairs, timeout_s=5)
    assert [v.status for v in verdicts] == ["passed"] * 15 + ["failed"], verdicts
    assert "udcff" in verdicts[-1].detail
    assert server.metrics()["jobs"]["started"] - started == 16 and sandbox.stats["retries"] == retries


EDGES = {
    "header not UTF-8": (_post(b"Bearer " + TOKEN.encode() + b"\xff\xfe"), 401),
    "header only a scheme": (_post(b"Bearer"), 401),
    "blank bearer": (_post(b"Bearer    "), 401),
    "nested 100k deep": (_post(b"Bearer " + TOKEN.encode(), b'{"jobs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), 400),
    "400-digit timeout": (_post(b"Bearer " + TOKEN.encode(),
                                json.dumps({"jobs": [{**GOOD, "timeout_s": 0}]}).replace('"timeout_s": 0', '"timeout_s": ' + "9" * 400).encode()),
                          400),
    "NaN timeout": (_post(b"Bearer " + TOKEN.encode(), json.dumps({"jobs": [{**GOOD, "timeout_s": float("nan")}]}).encode()),
                    400),
    "NUL in the token": (_post(b"Bearer " + TOKEN[:4].encode() + b"\x00" + TOKEN[4:].encode()), 400),
}


@pytest.mark.parametrize("case", sorted(EDGES))
def test_malformed_requests_are_refused_and_counted(served, case):
    server, _ = served
    request, expected = EDGES[case]
    before = server.metrics()
    assert _raw(server, request) == expected
    after = server.metrics()
    assert after["responses"].get(str(expected), 0) == before["responses"].get(str(expected), 0) + 1, after
    assert after["jobs"]["started"] == before["jobs"]["started"]


def test_blank_tokens_are_no_tokens(served, tmp_path):
    server, _ = served
    with pytest.raises(K2RLError, match="blank"):
        from k2rl.sandboxes.service import SandboxService

        SandboxService(get_sandbox("local", workers=1), "  \t ")
    for extra in ((), ("--insecure-loopback",)):
        env = {**os.environ, "K2RL_SANDBOX_TOKEN": "   ", "OMP_NUM_THREADS": "1"}
        env.pop("K2RL_SANDBOX_TOKEN_FILE", None)
        done = subprocess.run([sys.executable, "-m", "k2rl.cli", "sandbox", "serve", "--host", "0.0.0.0", "--port", "0",
                               *extra], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and "listening" not in done.stdout, done
        assert done.stderr.strip().startswith("k2rl: error:") and "blank" in done.stderr, done.stderr
    blank_file = tmp_path / "blank"
    blank_file.write_text(" \n")
    with pytest.raises(K2RLError, match="empty"):
        get_sandbox("remote", endpoints=[server.url], token_file=str(blank_file))


def test_drain_is_bounded_and_no_log_line_holds_the_token(tmp_path_factory):
    server = Server(write_token(tmp_path_factory), workers=1)
    assert _raw(server, _post(b"Bearer " + TOKEN[:4].encode() + b"\x00" + TOKEN[4:].encode())) == 400
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    stalled.sendall(_post(b"Bearer " + TOKEN.encode(), b'{"jobs": [' + b" " * 100)[:-50])  # headers, half a body
    status, _ = server.request("POST", "/v1/jobs", json.dumps({"jobs": [GOOD]}).encode())
    assert status == 200
    server.proc.send_signal(signal.SIGTERM)
    try:  # the default drain timeout is 600 s: a stalled client must not hold the exit that long
        out, err = server.proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.communicate()
        raise AssertionError("a client stalled mid-body held the drain up") from None
    finally:
        stalled.close()
    assert server.proc.returncode == 0, err
    assert TOKEN not in out and TOKEN not in err and TOKEN[4:] not in err, err
    assert "drained" in out


def test_only_jobs_without_a_judgement_are_sent_again(served):
    """A job answered ``sandbox_error`` is retried alone; the jobs judged in the same answer never rerun."""
    server, sandbox = served
    infra = ("import os, socket, struct, json\nbody = json.dumps({'status': 'sandbox_error', 'detail': 'infra'}).encode()\n"
             "for fd in range(3, 64):\n    try:\n        s = socket.socket(fileno=os.dup(fd))\n"
             "        s.sendall(struct.pack('>IB', len(body), 86) + body)\n    except OSError:\n        pass\n"
             "os._exit(0)\n")
    pairs = [(PROGRAM, "assert solve(3) == 26\n")] * 3 + [(PROGRAM, infra)]
    started, retries = server.metrics()["jobs"]["started"], sandbox.stats["retries"]
    verdicts = sandbox.run_tests_many(pairs, timeout_s=5)
    assert [v.status for v in verdicts] == ["passed"] * 3 + ["sandbox_error"], verdicts
    attempts = sandbox.max_attempts
    assert server.metrics()["jobs"]["started"] - started == 3 + attempts  # the infra job alone, each attempt
    assert sandbox.stats["retries"] - retries == attempts - 1
