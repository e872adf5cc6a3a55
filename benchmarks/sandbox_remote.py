"""Remote sandbox throughput and latency against the local backend, measured in the same run.

    OMP_NUM_THREADS=1 python benchmarks/sandbox_remote.py [--jobs 600] [--singles 200] [--workers 1]

Starts two ``k2rl sandbox serve`` servers on loopback (``--workers`` each) and a local pool with as
many workers as both together, then for each backend:
  * throughput: ``run_tests_many`` over ``--jobs`` trivial unit-test jobs (verdicts/s);
  * latency: ``--singles`` one-job ``run_tests`` calls in a row, p50/p99 of the round trip.
On one machine both backends share the same CPUs, so the ratio is the price of the transport
(HTTP, JSON, an extra thread hop) and of the servers' own processes, not of a network.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time



def _percentiles(latencies: list[float]) -> tuple[float, float]:
    from k2rl.sandboxes.service_metrics import percentile

    ordered = sorted(latencies)
    return percentile(ordered, 0.5) * 1000, percentile(ordered, 0.99) * 1000


def _measure(name: str, sandbox, jobs: int, singles: int) -> float:
    pairs = [(f"def f():\n    return {i}\n", f"assert f() == {i}\n") for i in range(jobs)]
    sandbox.run_tests_many(pairs[:20])  # warm: connections, compiled tests
    start = time.perf_counter()
    verdicts = sandbox.run_tests_many(pairs)
    rate = jobs / (time.perf_counter() - start)
    latencies = []
    for program, tests in pairs[:singles]:
        t0 = time.perf_counter()
        sandbox.run_tests(program, tests)
        latencies.append(time.perf_counter() - t0)
    p50, p99 = _percentiles(latencies)
    passed = sum(v.passed for v in verdicts)
    print(f"{name:<32} {rate:8.1f} verdicts/s   single-job p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   "
          f"passed {passed}/{jobs}", flush=True)
    return rate


def _start_server(token_file: str, workers: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "k2rl.cli", "sandbox", "serve", "--port", "0", "--token-file",
                             token_file, "--workers", str(workers)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].split()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--singles", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1, help="workers per server (local: twice this)")
    args = parser.parse_args(argv)

    from k2rl.sandboxes import get_sandbox

    token = secrets.token_hex(16)
    with tempfile.NamedTemporaryFile("w", suffix=".token") as handle:
        handle.write(token)
        handle.flush()
        servers = [_start_server(handle.name, args.workers) for _ in range(2)]
    try:
        with get_sandbox("local", workers=2 * args.workers) as local:
            base = _measure(f"local ({2 * args.workers} workers)", local, args.jobs, args.singles)
        with get_sandbox("remote", endpoints=[url for _, url in servers], token=token) as remote:
            rate = _measure(f"remote (2 servers x {args.workers})", remote, args.jobs, args.singles)
    finally:
        for proc, _ in servers:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    print(f"remote / local throughput: {rate / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
