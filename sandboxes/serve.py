"""``k2rl sandbox serve``: start a sandbox pool, then serve it until SIGTERM has drained it.

Start-up order is what readiness means: the pool's sandboxes are all warm before the port opens,
so ``/healthz`` answering 200 says jobs will run now. The listening line printed to stdout carries
the real port (``--port 0`` picks a free one), for scripts and tests.

Without a token the service refuses to start, unless ``--insecure-loopback`` is given *and* the host
is a loopback address: an open code-execution service on a routable address is never a default.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import socket

from k2rl.errors import K2RLError
from k2rl.sandboxes.service_protocol import TOKEN_ENV, TOKEN_FILE_ENV, resolve_token

SHUTDOWN_S = 5.0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


def service_token(token_file: str | None, insecure_loopback: bool, host: str) -> str | None:
    """The token the service requires, or None when it may run open (loopback only, on request)."""
    token = resolve_token(token_file=token_file)
    if token:
        return token
    if os.environ.get(TOKEN_ENV) is not None and not (token_file or os.environ.get(TOKEN_FILE_ENV)):
        raise K2RLError(f"${TOKEN_ENV} is blank; a blank token is no token: set a real one (or unset it)")
    if insecure_loopback and _is_loopback(host):
        return None
    if insecure_loopback:
        raise K2RLError(f"--insecure-loopback only serves on a loopback address, not {host}; give a token")
    raise K2RLError(f"the sandbox service needs a token: --token-file FILE, ${TOKEN_FILE_ENV} or ${TOKEN_ENV} "
                    "(or --insecure-loopback on 127.0.0.1)")


async def _serve(service, host: str, port: int, drain_timeout_s: float) -> None:
    from aiohttp import web

    runner = web.AppRunner(service.app(), handle_signals=False, access_log=None, logger=service.server_log())
    await runner.setup()
    # Once drained, connections still open (idle, or a client stalled mid-body) get this long.
    site = web.TCPSite(runner, host, port, shutdown_timeout=SHUTDOWN_S)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise K2RLError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    bound = runner.addresses[0]
    print(f"k2rl sandbox serve: listening on http://{host}:{bound[1]} "
          f"({service.sandbox.backend}, {service.sandbox.workers} workers)", flush=True)
    loop = asyncio.get_running_loop()

    def begin_drain() -> None:
        service.drain()
        loop.call_later(drain_timeout_s, service.drained.set)  # a wedged batch cannot hold the exit forever

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, begin_drain)
    await service.drained.wait()
    print(f"k2rl sandbox serve: drained, {service.metrics.finished} jobs served", flush=True)
    await runner.shutdown()
    await runner.cleanup()


def serve(*, backend: str, host: str, port: int, token_file: str | None, insecure_loopback: bool,
          workers: int | None, limits, drain_timeout_s: float = 600.0) -> int:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise K2RLError("k2rl sandbox serve needs aiohttp: pip install 'k2rl[serve]'") from None
    from k2rl.sandboxes import get_sandbox
    from k2rl.sandboxes.service import SandboxService

    if backend not in ("local", "docker"):
        raise K2RLError(f"k2rl sandbox serve runs the local or docker backend, not {backend!r}")
    token = service_token(token_file, insecure_loopback, host)
    sandbox = get_sandbox(backend, **({"workers": workers} if workers else {}))
    with sandbox:  # starts every worker now, closes them after the drain
        asyncio.run(_serve(SandboxService(sandbox, token, limits), host, port, drain_timeout_s))
    return 0
