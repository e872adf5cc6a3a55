"""The remote backend's view of its servers: which one takes the next batch, and a connection to it.

* **Spread**: a batch goes to the usable endpoint with the fewest batches in flight (ties: the one
  used least), so a faster server takes more work without any weights to tune.
* **Concurrency limit**: at most ``per_endpoint`` batches in flight per endpoint; a caller waits
  when every usable endpoint is full.
* **Cool-down**: an endpoint that failed (refused, reset, draining, 5xx) is skipped for 0.5 s,
  doubling per consecutive failure up to 30 s, then tried again; one success clears it.
* **Connection pooling**: each endpoint keeps its idle keep-alive connections (stdlib
  ``http.client``, no extra package on a trainer node) for the next batch.
"""

from __future__ import annotations

import http.client
import threading
import time
from urllib.parse import urlsplit

from k2rl.errors import K2RLError

COOLDOWN_S, MAX_COOLDOWN_S = 0.5, 30.0


class Endpoint:
    def __init__(self, url: str):
        text = url if "://" in url else f"http://{url}"
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise K2RLError(f"remote sandbox endpoint {url!r} is not http(s)://HOST:PORT")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise K2RLError(f"remote sandbox endpoint {url!r} has a bad port") from None
        self.scheme, self.host, self.port = parts.scheme, parts.hostname, port
        self.name = f"{parts.scheme}://{parts.hostname}:{port}"
        self.in_flight = self.uses = self.failures = 0
        self.down_until = 0.0
        self._idle: list[http.client.HTTPConnection] = []
        self._idle_lock = threading.Lock()

    def connection(self, connect_timeout_s: float, read_timeout_s: float) -> tuple[http.client.HTTPConnection, bool]:
        """``(connected connection, reused)``: an idle pooled one if there is one, else a new one."""
        with self._idle_lock:
            conn = self._idle.pop() if self._idle else None
        reused = conn is not None and conn.sock is not None
        if not reused:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=connect_timeout_s)
            conn.connect()
        conn.sock.settimeout(read_timeout_s)
        return conn, reused

    def keep(self, conn: http.client.HTTPConnection) -> None:
        with self._idle_lock:
            self._idle.append(conn)

    def close(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class EndpointPool:
    def __init__(self, urls: list[str], per_endpoint: int):
        self.endpoints = [Endpoint(url) for url in urls]
        if len({e.name for e in self.endpoints}) != len(self.endpoints):
            raise K2RLError("remote sandbox endpoints must be distinct")
        self.per_endpoint = per_endpoint
        self._cond = threading.Condition()

    def acquire(self, avoid: set[str], deadline: float) -> Endpoint | None:
        """An endpoint with a free slot (not in ``avoid`` if any other will do), or None at ``deadline``."""
        with self._cond:
            while True:
                now = time.monotonic()
                usable = [e for e in self.endpoints if e.down_until <= now and e.in_flight < self.per_endpoint]
                preferred = [e for e in usable if e.name not in avoid] or usable
                if preferred:
                    chosen = min(preferred, key=lambda e: (e.in_flight, e.uses))
                    chosen.in_flight += 1
                    chosen.uses += 1
                    return chosen
                if now >= deadline:
                    return None
                waking = [e.down_until for e in self.endpoints if e.down_until > now]
                self._cond.wait(max(0.001, min([deadline, *waking]) - now))

    def release(self, endpoint: Endpoint, ok: bool) -> None:
        with self._cond:
            endpoint.in_flight -= 1
            if ok:
                endpoint.failures, endpoint.down_until = 0, 0.0
            else:
                endpoint.failures += 1
                pause = min(MAX_COOLDOWN_S, COOLDOWN_S * 2 ** (endpoint.failures - 1))
                endpoint.down_until = time.monotonic() + pause
            self._cond.notify_all()

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.close()
