"""``k2rl sandbox ...`` commands: build the Docker image, check a backend end to end, serve one, clean up."""

from __future__ import annotations

import argparse


def _build_image(args: argparse.Namespace) -> int:
    from k2rl.sandboxes.docker_backend import build_image

    print(build_image(args.image, force=args.force))
    return 0


def _check(args: argparse.Namespace) -> int:
    from k2rl.sandboxes import get_sandbox

    program = "def add(a, b):\n    return a + b\n"
    tests = ["assert add(2, 3) == 5\n", "assert add(2, 3) == 6\n"]
    with get_sandbox(args.backend, **({} if args.backend == "remote" else {"workers": 1})) as sandbox:
        verdicts = sandbox.run_tests_many([(program, t) for t in tests], timeout_s=10)
        hacked = sandbox.run_tests("import os\nos._exit(0)\n", "assert add(2, 3) == 5\n", timeout_s=10)
    ok = verdicts[0].passed and not verdicts[1].passed and not hacked.passed
    for verdict in (*verdicts, hacked):
        print(f"{verdict.status:<10} {verdict.duration_s * 1000:7.1f} ms  {verdict.detail[:80]}")
    print(f"{args.backend} sandbox: {'ok' if ok else 'BROKEN'}")
    return 0 if ok else 1


def _cleanup(args: argparse.Namespace) -> int:
    from k2rl.sandboxes.docker_backend import remove_leftovers

    print(f"removed {remove_leftovers()} container(s)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from k2rl.sandboxes.serve import serve
    from k2rl.sandboxes.service import ServiceLimits

    limits = ServiceLimits(max_body_bytes=int(args.max_body_mb * (1 << 20)), max_batch=args.max_batch,
                           max_timeout_s=args.max_job_timeout)
    return serve(backend=args.backend, host=args.host, port=args.port, token_file=args.token_file,
                 insecure_loopback=args.insecure_loopback, workers=args.workers, limits=limits,
                 drain_timeout_s=args.drain_timeout)


def _add_serve(commands) -> None:
    serve = commands.add_parser("serve", help="serve a sandbox pool over HTTP (for the remote backend)")
    serve.add_argument("--backend", default="local", choices=("local", "docker"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8780, help="0 picks a free port (printed on start)")
    serve.add_argument("--token-file", default=None, help="file holding the bearer token (else $K2RL_SANDBOX_TOKEN)")
    serve.add_argument("--insecure-loopback", action="store_true", help="allow no token, on a loopback host only")
    serve.add_argument("--workers", type=int, default=None, help="sandbox pool size (default: the pool's)")
    serve.add_argument("--max-batch", type=int, default=256, help="jobs per request")
    serve.add_argument("--max-body-mb", type=float, default=16.0, help="request body limit (413 above)")
    serve.add_argument("--max-job-timeout", type=float, default=60.0, help="per-job deadline in seconds")
    serve.add_argument("--drain-timeout", type=float, default=600.0, help="seconds a drain may wait for batches")
    serve.set_defaults(func=_serve)


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("sandbox", help="code-execution sandboxes (local bubblewrap, Docker)")
    commands = parser.add_subparsers(dest="sandbox_command", metavar="SUBCOMMAND", required=True)
    build = commands.add_parser("build-image", help="build the default Docker sandbox image offline")
    build.add_argument("--image", default=None, help="tag to build (default: derived from this Python)")
    build.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    build.set_defaults(func=_build_image)
    check = commands.add_parser("check", help="run a passing, a failing and a cheating program")
    check.add_argument("--backend", default="local", choices=("local", "docker", "remote"))
    check.set_defaults(func=_check)
    _add_serve(commands)
    cleanup = commands.add_parser("cleanup", help="remove leftover sandbox containers")
    cleanup.set_defaults(func=_cleanup)
