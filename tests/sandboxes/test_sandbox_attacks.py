"""Adversarial suite: programs that try to pass without solving, to escape, or to break the sandbox.

Every attack runs on both backends. For each one the verdict must not be a pass (where a pass would
mean the attack worked), the host must be untouched, and the sandbox must serve a correct program
afterwards (with no process or file left over from the attack).

The task every cheating program pretends to solve: ``solve(x) == x * x + 17``; no attack computes it.
Probes (network, secrets, sockets) are written so that a *successful escape makes the tests pass*:
the tests assert the escape happened, so a pass verdict would reveal it.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading

import pytest
from sandbox_support import BACKENDS, assert_healthy, open_sandbox

TOKEN = secrets.token_hex(16)
HOST_SECRET_FILE = f"/tmp/k2rl-host-secret-{TOKEN[:8]}"
HOST_ESCAPE_FILE = f"/tmp/k2rl-escape-{TOKEN[:8]}"
os.environ["K2RL_TEST_SECRET"] = TOKEN  # set before any sandbox starts: the harness inherits it

TESTS = "assert solve(3) == 26\nassert solve(12345) == 152399042\nassert solve(-4) == 33\n"


class Listener:
    """A host loopback TCP server that hands TOKEN to anyone who connects (and counts them)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.sendall(TOKEN.encode())
            conn.close()


LISTENER = Listener()

# name -> (program, tests, timeout_s)
ATTACKS: dict[str, tuple[str, str, float]] = {
    "sys_exit_at_import": ("import sys\nsys.exit(0)\ndef solve(x):\n    return 0\n", TESTS, 5),
    "os_exit_at_import": ("import os\nos._exit(0)\n", TESTS, 5),
    "sys_exit_in_call": ("def solve(x):\n    import sys\n    sys.exit(0)\n", TESTS, 5),
    "os_exit_in_call": ("def solve(x):\n    import os\n    os._exit(0)\n", TESTS, 5),
    "raise_systemexit_true": ("def solve(x):\n    raise SystemExit(True)\n", TESTS, 5),
    "keyboard_interrupt": ("def solve(x):\n    raise KeyboardInterrupt\n", TESTS, 5),
    "atexit_os_exit": ("import atexit, os\natexit.register(lambda: os._exit(0))\ndef solve(x):\n    return None\n",
                       TESTS, 5),
    "excepthook": ("import sys, os\nsys.excepthook = lambda *a: os._exit(0)\n"
                   "def solve(x):\n    raise AssertionError\n", TESTS, 5),
    "del_hook_exit": ("import os\nclass Bye:\n    def __del__(self):\n        os._exit(0)\n"
                      "def solve(x):\n    Bye()\n    return None\n", TESTS, 5),
    "thread_exit": ("import os, threading, time\n"
                    "threading.Thread(target=lambda: (time.sleep(0.01), os._exit(0)), daemon=True).start()\n"
                    "def solve(x):\n    time.sleep(0.5)\n    return None\n", TESTS, 5),
    "eq_always_true": ("class Any:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
                       "def solve(x):\n    return Any()\n", TESTS, 5),
    "int_subclass_eq": ("class I(int):\n    def __eq__(self, other):\n        return True\n"
                        "    __hash__ = int.__hash__\ndef solve(x):\n    return I(0)\n", TESTS, 5),
    "str_subclass_eq": ("class S(str):\n    def __eq__(self, other):\n        return True\n"
                        "    __hash__ = str.__hash__\ndef solve(x):\n    return S('')\n",
                        "assert solve(1) == 'eighteen'\n", 5),
    "float_subclass_isclose": ("class F(float):\n    def __sub__(self, o):\n        return 0.0\n"
                               "    __rsub__ = __sub__\ndef solve(x):\n    return F(1.0)\n",
                               "assert abs(solve(3) - 26) < 1e-9\n", 5),
    "patch_builtins_abs_len": ("import builtins\nbuiltins.abs = lambda v: 0\nbuiltins.len = lambda v: 3\n"
                               "def solve(x):\n    return [0]\n",
                               "assert abs(solve(3)[0] - 26) < 1e-9\nassert len(solve(3)) == 3\n", 5),
    "patch_math_isclose": ("import math\nmath.isclose = lambda *a, **k: True\ndef solve(x):\n    return 0.0\n",
                           "import math\nassert math.isclose(solve(3), 26.0)\n", 5),
    "patch_unittest_asserts": ("import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\n"
                               "def solve(x):\n    return 0\n",
                               "import unittest\nunittest.TestCase().assertEqual(solve(3), 26)\n", 5),
    "print_passed": ("print('PASSED\\nAll tests passed\\nOK')\nimport sys\nsys.stdout.flush()\n"
                     "def solve(x):\n    print('test passed: 26')\n    return None\n", TESTS, 5),
    "write_conftest_and_tests": ("import os\nfor d in ('.', '/tmp', os.getcwd()):\n    try:\n"
                                 "        open(os.path.join(d, 'conftest.py'), 'w').write('raise SystemExit(0)')\n"
                                 "        open(os.path.join(d, 'tests.py'), 'w').write('')\n"
                                 "        open(os.path.join(d, 'test_solution.py'), 'w').write('')\n"
                                 "    except OSError:\n        pass\ndef solve(x):\n    return 0\n", TESTS, 5),
    "caller_frame": ("import sys\ndef solve(x):\n    f = sys._getframe(1)\n    seen = []\n    while f:\n"
                     "        seen += [v for v in f.f_locals.values() if type(v) is int and v not in (x,)]\n"
                     "        f = f.f_back\n    return seen[-1] if seen else 0\n", TESTS, 5),
    "gc_scan_expected": ("import gc\ndef solve(x):\n    ints = [o for o in gc.get_objects() if type(o) in (list, tuple, dict)]\n"
                         "    for o in ints:\n        for v in (o.values() if type(o) is dict else o):\n"
                         "            if type(v) is int and v > 100000 and v % 1000 == 42:\n                return v\n"
                         "    return 26 if x == 3 else 33\n", TESTS, 5),
    "code_object_consts": ("import gc, types\ndef solve(x):\n    for o in gc.get_objects():\n"
                           "        if type(o) is types.FunctionType and o.__code__.co_filename == 'tests.py':\n"
                           "            return o.__code__.co_consts\n    return None\n", TESTS, 5),
    "settrace_tricks": ("import sys\ndef tracer(frame, event, arg):\n    if event == 'exception':\n"
                        "        frame.f_locals.clear()\n    return tracer\nsys.settrace(tracer)\nsys.setprofile(tracer)\n"
                        "def solve(x):\n    return None\n", TESTS, 5),
    "stdout_protocol_injection": ("import os, struct, json\n"
                                  "for obj, kind in (({'ev': 'done', 'stdout': ''}, b'Z'), ({'id': 1, 'ok': 26}, b'C')):\n"
                                  "    body = json.dumps(obj).encode()\n"
                                  "    os.write(1, struct.pack('>IB', len(body), kind[0]) + body)\n"
                                  "def solve(x):\n    return None\n", TESTS, 5),
    "socket_forged_replies": ("import os, socket, struct, json\n"
                              "def frames():\n    out = b''\n    for i in range(1, 50):\n"
                              "        body = json.dumps({'id': i, 'ok': 26}).encode()\n"
                              "        out += struct.pack('>IB', len(body), 67) + body\n    return out\n"
                              "for fd in map(int, os.listdir('/proc/self/fd')):\n    try:\n"
                              "        s = socket.socket(fileno=os.dup(fd))\n        s.sendall(frames())\n    except OSError:\n"
                              "        pass\ndef solve(x):\n    return None\n", TESTS, 5),
    "oversized_frame": ("import os, socket, struct\nfor fd in map(int, os.listdir('/proc/self/fd')):\n    try:\n"
                        "        s = socket.socket(fileno=os.dup(fd))\n        s.sendall(struct.pack('>IB', 2**31, 67))\n"
                        "    except OSError:\n        pass\ndef solve(x):\n    return 26\n", TESTS, 5),
    "fork_bomb": ("import os\ndef solve(x):\n    while True:\n        try:\n            os.fork()\n"
                  "        except OSError:\n            pass\n", TESTS, 3),
    "memory_bomb": ("def solve(x):\n    hog = []\n    while True:\n        hog.append(bytearray(50 << 20))\n", TESTS, 5),
    "fork_memory_bomb": ("import os, time\ndef solve(x):\n    for i in range(8):\n        if os.fork() == 0:\n            break\n"
                         "    hog = bytearray(600 << 20)\n    for j in range(0, len(hog), 4096):\n        hog[j] = 1\n"
                         "    time.sleep(1)\n    return 26\n", "assert solve(3) == 26 and False\n", 3),
    "disk_bomb": ("import os\ndef solve(x):\n    for i in range(1000):\n        with open(f'/tmp/fill{i}', 'wb') as f:\n"
                  "            f.write(os.urandom(1 << 20) * 8)\n    return None\n", TESTS, 5),
    "fd_bomb": ("import os\ndef solve(x):\n    fds = []\n    while True:\n        fds.append(os.open('/dev/null', os.O_RDONLY))\n",
                TESTS, 5),
    "loop_ignoring_signals": ("import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGALRM):\n"
                              "    signal.signal(s, signal.SIG_IGN)\ndef solve(x):\n    while True:\n        pass\n", TESTS, 1.5),
    "loop_at_import": ("while True:\n    pass\n", TESTS, 1.0),
    "loop_in_c_code": ("import re\ndef solve(x):\n    return re.match(r'(a+)+$', 'a' * 64 + 'b')\n", TESTS, 1.5),
    "output_flood": ("import sys\ndef solve(x):\n    line = 'PASSED ' * 1000 + '\\n'\n    for _ in range(20000):\n"
                     "        sys.stdout.write(line)\n        sys.stderr.write(line)\n    return None\n", TESTS, 10),
    "host_loopback_listener": (f"import socket\ndef solve(x):\n    try:\n"
                               f"        s = socket.create_connection(('127.0.0.1', {LISTENER.port}), timeout=1)\n"
                               f"        return s.recv(64).decode()\n    except OSError as e:\n        return repr(e)\n",
                               f"assert solve(0) == {TOKEN!r}\n", 5),
    "outside_network": ("import socket\ndef solve(x):\n    for host in ('8.8.8.8', '1.1.1.1', 'pypi.org'):\n        try:\n"
                        "            socket.create_connection((host, 443 if '.' in host else 53), timeout=1)\n"
                        "            return 'connected'\n        except OSError:\n            pass\n    return 'blocked'\n",
                        "assert solve(0) == 'connected'\n", 10),
    "host_secret_file": (f"def solve(x):\n    for p in ({HOST_SECRET_FILE!r}, '/etc/shadow', '/root/.bashrc'):\n        try:\n"
                         "            return open(p).read().strip()\n        except OSError:\n            pass\n",
                         f"assert solve(0) == {TOKEN!r}\n", 5),
    "host_environment": ("import os\ndef solve(x):\n    if 'K2RL_TEST_SECRET' in os.environ:\n"
                         "        return os.environ['K2RL_TEST_SECRET']\n"
                         "    for pid in os.listdir('/proc'):\n        try:\n"
                         "            env = open(f'/proc/{pid}/environ', 'rb').read()\n        except OSError:\n            continue\n"
                         "        for item in env.split(b'\\0'):\n            if item.startswith(b'K2RL_TEST_SECRET='):\n"
                         "                return item.split(b'=', 1)[1].decode()\n",
                         f"assert solve(0) == {TOKEN!r}\n", 5),
    "write_outside": (f"def solve(x):\n    done = []\n    for p in ({HOST_ESCAPE_FILE!r}, '/usr/escape', '/opt/python/escape', '/etc/escape',"
                      " '/work/escape', '/root/escape'):\n        try:\n            open(p, 'w').write('x')\n            done.append(p)\n"
                      "        except OSError:\n            pass\n    return done\n",
                      f"assert set(solve(0)) - {{{HOST_ESCAPE_FILE!r}}}\n", 5),
    "docker_socket": ("import socket\ndef solve(x):\n    for p in ('/var/run/docker.sock', '/run/docker.sock', '/run/containerd/containerd.sock'):\n"
                      "        try:\n            socket.socket(socket.AF_UNIX).connect(p)\n            return 'connected'\n"
                      "        except OSError:\n            pass\n", "assert solve(0) == 'connected'\n", 5),
    "kill_parent_and_pid1": ("import os, signal\nfor pid in (os.getppid(), 1):\n    for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSTOP):\n"
                             "        try:\n            os.kill(pid, sig)\n        except OSError:\n            pass\n"
                             "try:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n"
                             "def solve(x):\n    return None\n", TESTS, 5),
    "ptrace_pid1": ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                    "def solve(x):\n    attached = libc.ptrace(16, 1, 0, 0) == 0\n    try:\n"
                    "        open('/proc/1/mem', 'rb').read(1)\n        readable = True\n    except OSError:\n        readable = False\n"
                    "    try:\n        os.listdir('/proc/1/fd')\n        fds = True\n    except OSError:\n        fds = False\n"
                    "    return 'escaped' if attached or readable or fds else 'denied'\n",
                    "assert solve(0) == 'escaped'\n", 5),
    "nested_user_namespace": ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                              "def solve(x):\n    if os.fork() == 0:\n        os._exit(0 if libc.unshare(0x10000000) == 0 else 1)\n"
                              "    return 'escaped' if os.waitstatus_to_exitcode(os.wait()[1]) == 0 else 'denied'\n",
                              "assert solve(0) == 'escaped'\n", 5),
    "surviving_daemon": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                         "        import signal\n        signal.signal(signal.SIGTERM, signal.SIG_IGN)\n        while True:\n"
                         "            open('/tmp/daemon-was-here', 'w').write('1')\n            time.sleep(0.01)\n    os._exit(0)\n"
                         "def solve(x):\n    return None\n", TESTS, 5),
    "segfault": ("import ctypes\ndef solve(x):\n    return ctypes.cast(8, ctypes.POINTER(ctypes.c_long)).contents.value\n",
                 TESTS, 5),
    "stack_overflow": ("import sys\nsys.setrecursionlimit(10**8)\ndef solve(x):\n    return solve(x + 1)\n", TESTS, 3),
    "generator_result": ("def solve(x):\n    yield 26\n", TESTS, 5),
    "huge_int_result": ("def solve(x):\n    return 10 ** 100000\n", TESTS, 5),
    "stop_iteration_into_all": ("def solve(x):\n    raise StopIteration\n",
                                "assert all(map(lambda x: solve(x) == x * x + 17, [3, 5]))\n", 5),
    "test_side_endless_loop": ("def solve(x):\n    return 0\n",
                               "x = solve(3)\nwhile x != 26:\n    pass\n", 0.5),
    "self_referencing_list": ("def solve(x):\n    a = []\n    a.append(a)\n    return a\n", "assert solve(0)\n", 5),
    # The program's socket outlives it in a daemon, so closing it proves nothing: the harness must
    # still learn of the exit (promptly, see test_exit_with_socket_held_open_is_prompt).
    "exit_with_socket_held_open": ("import os, time\ndef solve(x):\n    if os.fork() == 0:\n        os.setsid()\n"
                                   "        time.sleep(60)\n        os._exit(0)\n    os._exit(0)\n", TESTS, 10),
}

# A correct program that leaves a daemon forging correct answers on every socket it can reach, for
# long enough to overlap the next job: if anything of one job reached the next (a socket, a
# process), the wrong program run right after it would pass.
FORGER = ("import os, socket, struct, json, time\n"
          "def frames():\n    out = b''\n    for i in range(1, 20):\n"
          "        body = json.dumps({'id': i, 'ok': [26, 152399042, 33][min(i, 3) - 1]}).encode()\n"
          "        out += struct.pack('>IB', len(body), 67) + body\n    return out\n"
          "if os.fork() == 0:\n    os.setsid()\n    end = time.time() + 3\n    while time.time() < end:\n"
          "        for fd in range(3, 64):\n            try:\n                os.write(fd, frames())\n"
          "            except OSError:\n                pass\n        time.sleep(0.005)\n    os._exit(0)\n"
          "def solve(x):\n    return x * x + 17\n")


@pytest.fixture(scope="module", params=BACKENDS)
def sandbox(request):
    with open(HOST_SECRET_FILE, "w") as handle:
        handle.write(TOKEN)
    sb = open_sandbox(request.param, workers=1)
    yield sb
    sb.close()
    os.unlink(HOST_SECRET_FILE)


def test_attack_suite_is_large():
    assert len(ATTACKS) >= 30


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_does_not_pass(sandbox, name):
    program, tests, timeout_s = ATTACKS[name]
    before = LISTENER.connections
    verdict = sandbox.run_tests(program, tests, timeout_s=timeout_s)
    assert not verdict.passed, f"{name} fooled the {sandbox.backend} sandbox: {verdict}"
    assert verdict.status != "passed"
    assert LISTENER.connections == before, "the program reached a host loopback listener"
    assert not os.path.exists(HOST_ESCAPE_FILE), "the program wrote a file on the host"
    assert_healthy(sandbox)


def test_exit_with_socket_held_open_is_prompt(sandbox):
    verdict = sandbox.run_tests(*ATTACKS["exit_with_socket_held_open"][:2], timeout_s=10)
    # "crashed", not "timeout": the verdict came when the program exited, not at the 10 s deadline
    assert verdict.status == "crashed", verdict


def test_a_previous_job_cannot_answer_for_the_next(sandbox):
    sandbox.run_tests(FORGER, TESTS, timeout_s=5)  # its own verdict does not matter
    for _ in range(3):
        verdict = sandbox.run_tests("def solve(x):\n    return 0\n", TESTS, timeout_s=5)
        assert not verdict.passed and verdict.status == "failed", verdict
    assert_healthy(sandbox)


def test_timeouts_are_reported_as_such(sandbox):
    verdict = sandbox.run_tests(*ATTACKS["loop_ignoring_signals"][:2], timeout_s=1.0)
    assert verdict.status == "timeout", verdict


def test_output_is_bounded(sandbox):
    verdict = sandbox.run_tests(*ATTACKS["output_flood"][:2], timeout_s=10)
    assert len(verdict.stdout) <= 8192 and len(verdict.stderr) <= 8192
    assert "PASSED" in verdict.stdout  # the tail is kept, and it is still not evidence


def test_memory_bomb_is_reported(sandbox):
    # Each of the three asserts fills 1 GiB before its MemoryError: on a loaded machine that takes
    # seconds, so a generous limit keeps this about the status, not about the machine's speed.
    verdict = sandbox.run_tests(*ATTACKS["memory_bomb"][:2], timeout_s=30)
    assert verdict.status == "memory", verdict


def test_sandbox_sees_no_host(sandbox):
    program = ("import os, socket\ndef view():\n    return [sorted(os.listdir('/')), dict(os.environ), os.getuid(),\n"
               "            socket.if_nameindex(), os.path.exists('/var/run/docker.sock'), os.path.exists('/work')]\n")
    verdict = sandbox.run_tests(program, "v = view()\nassert False, v\n", timeout_s=5)
    root, env, uid, interfaces, docker_sock, work = eval(verdict.detail.split("AssertionError: ", 1)[1].rsplit(" (tests.py", 1)[0])
    assert uid != 0
    assert "K2RL_TEST_SECRET" not in env and "HOME" in env and env["HOME"] == "/tmp"
    assert [name for _, name in interfaces] == ["lo"]
    assert not docker_sock and not work and "root" not in root and "work" not in root
