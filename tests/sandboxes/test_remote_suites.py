"""The remote backend over three loopback servers passes what the local backend passes.

HumanEval's 164 canonical solutions all pass, and every attack of the adversarial suite
(:mod:`test_sandbox_attacks`, reused, not copied) is no pass and no escape: the verdict is the
server's harness's, so nothing the program does is evidence in transit either.
"""

from __future__ import annotations

import os

import pytest
from remote_support import TOKEN, start_servers, write_token
from sandbox_support import assert_healthy, assert_humaneval_passes
from test_sandbox_attacks import ATTACKS, FORGER, HOST_ESCAPE_FILE, HOST_SECRET_FILE, LISTENER, TESTS
from test_sandbox_attacks import TOKEN as SECRET

from k2rl.sandboxes import get_sandbox


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    with open(HOST_SECRET_FILE, "w") as handle:
        handle.write(SECRET)
    servers = start_servers(3, write_token(tmp_path_factory), workers=1)
    sandbox = get_sandbox("remote", endpoints=[s.url for s in servers], token=TOKEN, per_endpoint=2, batch_size=8)
    yield sandbox, servers
    sandbox.close()
    for server in servers:
        server.stop()
    os.unlink(HOST_SECRET_FILE)


def test_humaneval_canonical_solutions_all_pass(remote):
    sandbox, servers = remote
    assert_humaneval_passes(sandbox)
    served = [server.metrics()["jobs"]["finished"] for server in servers]
    assert all(n > 0 for n in served), f"load was not spread over the servers: {served}"


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_does_not_pass_through_remote(remote, name):
    sandbox, _ = remote
    program, tests, timeout_s = ATTACKS[name]
    before = LISTENER.connections
    verdict = sandbox.run_tests(program, tests, timeout_s=timeout_s)
    assert not verdict.passed and verdict.status != "passed", f"{name} fooled the remote sandbox: {verdict}"
    assert verdict.status != "sandbox_error", verdict  # judged by a harness, not lost in transit
    assert LISTENER.connections == before, "the program reached a host loopback listener"
    assert not os.path.exists(HOST_ESCAPE_FILE), "the program wrote a file on the host"
    assert_healthy(sandbox)


def test_a_previous_job_cannot_answer_for_the_next(remote):
    sandbox, _ = remote
    sandbox.run_tests_many([(FORGER, TESTS)] * 3, timeout_s=5)
    verdicts = sandbox.run_tests_many([("def solve(x):\n    return 0\n", TESTS)] * 6, timeout_s=5)
    assert all(not v.passed and v.status == "failed" for v in verdicts), verdicts


def test_stdin_stdout_jobs_and_input_order(remote):
    sandbox, _ = remote
    many = sandbox.run_io_many([("print(input())", [("a\n", "a\n")]), ("print(1)", [("", "2")])] * 10, timeout_s=10)
    assert [v.passed for v in many] == [True, False] * 10
    results = sandbox.run_tests_many([(f"def f():\n    return {i}\n", "assert f() == 5\n") for i in range(40)])
    assert [v.passed for v in results] == [i == 5 for i in range(40)]
