"""Adversarial suite, part two: the sandbox trusts nothing a request carries.

* A job's *tests* are attacker code too: they run confined (no host secrets, no network, read-only
  system, not root, limited), in a sandbox of their own. Each probe is written so that a successful
  escape makes the tests *pass*: a pass verdict would reveal it.
* Every job starts from a clean sandbox: nothing a job (its program or its tests) leaves anywhere
  reaches a later job, and the writable space is capped and released.
* A job's output can never break the answer: text from a candidate is always encodable.

Both backends; :mod:`test_remote_trust` sends the same through the service.
"""

from __future__ import annotations

import json
import os

import pytest
from sandbox_support import assert_healthy
from test_sandbox_attacks import HOST_ESCAPE_FILE, HOST_SECRET_FILE, LISTENER, TOKEN
from test_sandbox_attacks import sandbox  # noqa: F401 - the same fixture: one warm sandbox per backend, secret file set

from k2rl.sandboxes.service_protocol import verdict_to_json

# A host path the sandboxes do not have (a /tmp path would only name the sandbox's own /tmp).
HOST_ONLY_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), f".escape-{TOKEN[:8]}")
PROGRAM = "def solve(x):\n    return x * x + 17\n"

# name -> tests source; a pass means the tests reached something they must not
TEST_ATTACKS: dict[str, str] = {
    "tests_read_host_secret_file": f"assert open({HOST_SECRET_FILE!r}).read() == {TOKEN!r}\n",
    "tests_read_shadow": "assert open('/etc/shadow').read()\n",
    "tests_read_host_environment": f"import os\nassert os.environ.get('K2RL_TEST_SECRET') == {TOKEN!r}\n",
    "tests_scan_proc_environ": ("import os\nfound = []\nfor pid in os.listdir('/proc'):\n    try:\n"
                                "        found.append(open(f'/proc/{pid}/environ', 'rb').read())\n    except OSError:\n"
                                "        pass\n"
                                f"assert any({TOKEN!r}.encode() in env for env in found)\n"),
    "tests_run_as_root": "import os\nassert os.getuid() == 0 or os.geteuid() == 0\n",
    "tests_signal_host_process": f"import os\nos.kill({os.getpid()}, 0)\n",
    "tests_host_loopback": ("import socket\n"
                            f"s = socket.create_connection(('127.0.0.1', {LISTENER.port}), timeout=1)\n"
                            f"assert s.recv(64).decode() == {TOKEN!r}\n"),
    "tests_write_host_file": f"open({HOST_ONLY_FILE!r}, 'w').write('x')\n",
    "tests_write_system": ("wrote = []\nfor p in ('/usr/escape', '/opt/python/escape', '/etc/escape', '/escape'):\n"
                           "    try:\n        open(p, 'w').write('x')\n        wrote.append(p)\n    except OSError:\n"
                           "        pass\nassert wrote\n"),
    "tests_docker_socket": ("import socket\nok = False\nfor p in ('/var/run/docker.sock', '/run/docker.sock'):\n    try:\n"
                            "        socket.socket(socket.AF_UNIX).connect(p)\n        ok = True\n    except OSError:\n"
                            "        pass\nassert ok\n"),
    "tests_memory_unbounded": "hog = bytearray(6 << 30)\nhog[::4096] = b'x' * len(hog[::4096])\nassert solve(3) == 26\n",
}

# What job A leaves behind, then what job B finds (a pass of B means A's state reached it).
LEAVE = ("import os, ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
         "for path in ('/answer', '/dev/answer', '/tmp/answer', '/dev/shm/answer', '/opt/answer'):\n"
         "    try:\n        open(path, 'w').write('26')\n    except OSError:\n        pass\n"
         "shm = libc.shmget(0x2626, 1 << 20, 0o1666)\n"
         "if shm >= 0:\n    libc.shmat.restype = ctypes.c_void_p\n    at = libc.shmat(shm, None, 0)\n"
         "    if at not in (None, ctypes.c_void_p(-1).value):\n        ctypes.memmove(at, b'26', 2)\n"
         "libc.semget(0x2627, 1, 0o1666)\nlibc.msgget(0x2628, 0o1666)\n"
         "libc.syscall(248, b'user', b'answer', b'26', 2, -4)\n"  # add_key to the user keyring (x86_64)
         "def solve(x):\n    return x * x + 17\n")
FIND = ("import os, ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "def found():\n    out = []\n"
        "    for path in ('/answer', '/dev/answer', '/tmp/answer', '/dev/shm/answer', '/opt/answer'):\n"
        "        if os.path.exists(path):\n            out.append(path)\n"
        "    for table in ('shm', 'sem', 'msg'):\n        try:\n"
        "            rows = open('/proc/sysvipc/' + table).read().splitlines()[1:]\n        except OSError:\n"
        "            rows = []\n        out += [table] * len(rows)\n"
        "    if libc.syscall(250, 10, -4, b'user', b'answer', 0) > 0:\n"  # keyctl(KEYCTL_SEARCH) in the user keyring
        "        out.append('key')\n    return out\n")


@pytest.mark.parametrize("name", sorted(TEST_ATTACKS))
def test_tests_are_confined(sandbox, name):
    before = LISTENER.connections
    verdict = sandbox.run_tests(PROGRAM, TEST_ATTACKS[name], timeout_s=5)
    assert not verdict.passed, f"{name}: the tests reached the host through the {sandbox.backend} sandbox: {verdict}"
    assert verdict.status not in ("passed", "sandbox_error"), verdict
    assert LISTENER.connections == before, "the tests reached a host loopback listener"
    assert not os.path.exists(HOST_ESCAPE_FILE) and not os.path.exists(HOST_ONLY_FILE), "the tests wrote on the host"
    assert_healthy(sandbox)


def test_tests_still_judge_and_cannot_be_seen_by_the_candidate(sandbox):
    """The judge is not the candidate's sandbox: the program sees its zygote and itself, no judge."""
    program = "import os\ndef procs():\n    return sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
    verdict = sandbox.run_tests(program, "assert len(procs()) == 2, procs()\n", timeout_s=5)
    assert verdict.passed, verdict
    verdict = sandbox.run_tests(PROGRAM, "assert solve(3) == 26\nassert solve(4) == 34\n", timeout_s=5)
    assert not verdict.passed and verdict.cases_passed == 1 and verdict.status == "failed", verdict


@pytest.mark.parametrize("side", ["program", "tests"])
def test_nothing_a_job_leaves_reaches_the_next(sandbox, side):
    if side == "program":
        sandbox.run_tests(LEAVE, "assert solve(3) == 26\n", timeout_s=10)
        verdict = sandbox.run_tests(FIND, "assert found()\n", timeout_s=10)
    else:  # the tests of job A leave it, in the judge's sandbox and process; the tests of job B look
        leave_tests = LEAVE.replace("def solve(x):\n    return x * x + 17\n", "") + \
            "import builtins\nbuiltins.LEFT_BY_A = 26\nassert solve(3) == 26\n"
        sandbox.run_tests(PROGRAM, leave_tests, timeout_s=10)
        verdict = sandbox.run_tests(PROGRAM, FIND + "assert found() or getattr(__builtins__, 'LEFT_BY_A', 0) or "
                                    "'LEFT_BY_A' in dir(__import__('builtins'))\n", timeout_s=10)
    assert not verdict.passed, f"a later job saw state left by an earlier one on {sandbox.backend}: {verdict}"
    assert verdict.status == "failed", verdict


def test_writable_space_is_capped(sandbox):
    """/dev/shm (like /tmp) is a capped tmpfs: 100 MB do not fit in the default 64 MB."""
    program = ("def fill(path):\n    done = 0\n    try:\n        with open(path, 'wb') as f:\n"
               "            for _ in range(100):\n                f.write(b'x' * (1 << 20))\n                f.flush()\n"
               "                done += 1\n    except OSError:\n        pass\n    return done\n")
    verdict = sandbox.run_tests(program, "assert fill('/dev/shm/big') >= 100\n", timeout_s=10)
    assert not verdict.passed, verdict
    verdict = sandbox.run_tests(program, "assert fill('/tmp/big') >= 100\n", timeout_s=10)
    assert not verdict.passed, verdict
    assert_healthy(sandbox)


CANDIDATE_TEXT = {
    "exception": "def solve(x):\n    raise ValueError('\\udcff')\n",
    "returned_string": "def solve(x):\n    return '\\udcff\\ud800'\n",
    "printed_bytes": "import sys\ndef solve(x):\n    sys.stdout.buffer.write(b'\\xff\\xfe')\n    sys.stderr.write('\\udcff')\n"
                     "    raise ValueError('\\udcff')\n",
}


@pytest.mark.parametrize("case", sorted(CANDIDATE_TEXT))
def test_candidate_text_never_breaks_a_verdict(sandbox, case):
    verdict = sandbox.run_tests(CANDIDATE_TEXT[case], "r = solve(3)\nassert r == 26, r\n", timeout_s=5)
    assert verdict.status == "failed", verdict
    for text in (verdict.stdout, verdict.stderr, verdict.detail):
        text.encode("utf-8")  # raises if a lone surrogate got through
    json.dumps(verdict_to_json(verdict), ensure_ascii=False).encode("utf-8")
    assert "udcff" in verdict.detail or "\ufffd" in verdict.detail or case == "printed_bytes", verdict


def test_tests_cannot_break_the_harness_protocol(sandbox):
    """The report socket is the tests' too: junk, a forged status or a flood on it is an error verdict."""
    probe = ("import os, socket, struct, json\nfor fd in range(3, 64):\n    try:\n        s = socket.socket(fileno=os.dup(fd))\n"
             "        for kind, body in ((b'V', b'[1, 2]'), (b'V', json.dumps({'status': 'forged'}).encode()),\n"
             "                           (b'E', b''), (b'V', b'x' * 100)):\n"
             "            s.sendall(struct.pack('>IB', len(body), kind[0]) + body)\n        s.sendall(struct.pack('>IB', 2**31, 86))\n"
             "    except OSError:\n        pass\nassert solve(3) == 26\n")
    verdict = sandbox.run_tests(PROGRAM, probe, timeout_s=5)
    assert verdict.status in ("error", "crashed", "failed"), verdict
    assert_healthy(sandbox)
