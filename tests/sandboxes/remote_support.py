"""Sandbox servers for the remote-backend tests: real ``k2rl sandbox serve`` processes on loopback.

Each server is started on port 0 and its real port read from the listening line it prints once
every worker is warm. Servers are stopped by their own pid (SIGTERM, then SIGKILL), never by name.
"""

from __future__ import annotations

import http.client
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

TOKEN = "test-token-7f3a9c"


class Server:
    def __init__(self, token_file: str | None, workers: int = 1, extra: tuple[str, ...] = ()):
        argv = [sys.executable, "-m", "k2rl.cli", "sandbox", "serve", "--host", "127.0.0.1", "--port", "0",
                "--workers", str(workers), *extra]
        if token_file:
            argv += ["--token-file", token_file]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop("K2RL_SANDBOX_TOKEN", None)
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = _first_line(self.proc, 180)
        if "listening on http://" not in line:
            self.stop()
            raise RuntimeError(f"sandbox server did not start: {line!r} {self.proc.stderr.read()[-2000:]}")
        self.url = line.split("listening on ", 1)[1].split()[0]
        self.port = int(self.url.rsplit(":", 1)[1])

    def request(self, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN,
                headers: dict | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        sent = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, {"raw": data.decode("utf-8", "replace")}

    def raw_post(self, head: bytes, body_chunks) -> int:
        """The status of a request whose body is sent while the answer is read (a server may answer a
        request it refuses before reading its body, which ``http.client`` would never see)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)

        def send() -> None:
            try:
                sock.sendall(head)
                for chunk in body_chunks:
                    sock.sendall(chunk)
            except OSError:  # the server closed after refusing: expected
                pass

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        response = http.client.HTTPResponse(sock)
        response.begin()
        status = response.status
        sock.close()
        sender.join()
        return status

    def metrics(self) -> dict:
        status, data = self.request("GET", "/metrics")
        assert status == 200, data
        return data

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


def _first_line(proc: subprocess.Popen, timeout_s: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if selector.select(timeout=0.5):
            return proc.stdout.readline()
        if proc.poll() is not None:
            return ""
    return ""


def wait_until(condition, what: str, timeout_s: float = 60.0, poll_s: float = 0.002) -> None:
    """Poll ``condition`` (without spinning the GIL away from the threads doing the work) until it
    holds; a condition that never holds fails the test instead of hanging it."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def start_servers(count: int, token_file: str, workers: int = 1) -> list[Server]:
    servers = []
    try:
        for _ in range(count):
            servers.append(Server(token_file, workers))
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def write_token(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text(TOKEN + "\n")
    return str(path)
