"""Benchmark: k2rl's math checker against serial math-verify on GRPO-like batches, in one run.

Baseline: ``math_verify.verify(parse(gold), parse(response))`` for every pair, one after another in
this process (math-verify's signal timeouts on, as its documentation runs it). Candidate:
``MathChecker.check_many`` on the same pairs. Verdicts must be identical.

Two batches of ``--prompts x --group`` pairs, each response with its own reasoning text:

* **new prompts** — prompts neither side has seen (the first epoch of a run);
* **same prompts, new samples** — those prompts again with freshly sampled responses (a later
  epoch): answers recur, reasoning text does not, so no (gold, response) pair repeats.

Both sides first check the same warm-up batch of other prompts, as a long-lived checker inside a
training run is warm (SymPy's caches and the LaTeX grammar's prediction tables fill up in each
process over its first few hundred checks); the checker's start-up and warm-up are printed apart.

The acceptance target is a wall-clock speed-up of at least ``--target`` (5x) on the "new prompts"
batch with 2 workers on 2 cores; the script exits 1 if any verdict differs from the baseline.

Wall-clock ratios depend on how many cores are free while it runs, so CPU seconds are printed too
(this process for the baseline, the worker processes for the checker, read from /proc): their ratio
is the work saved per check, and times the number of workers it is what free cores would give.

Where the time goes on new prompts (CPU, one process emulating a warm worker, 60 prompts x 8): parsing
responses 63% (about three quarters LaTeX -> SymPy of answers never seen, the rest math-verify's regex
extraction over ~1.6k chars), parsing new golds 18%, verify 19% (two thirds SymPy ``simplify``); serial
math-verify spends 2.2x that CPU. All of it is work new prompts bring, so the wall ratio is at most
2 workers x ~2.2 = ~4.5x: the 5x target needs less work per new answer, not less overhead. This script
right after (``--prompts 60 --warmup 30``, 2 shared cores, load 6-7): 0.96x wall, 1.38x less CPU per
check; its workers' 1.25 s CPU against 0.96 s in one process is ~0.6 ms a check of IPC and pool upkeep
(or load noise).

Run: ``OMP_NUM_THREADS=1 python benchmarks/math_checker.py [--prompts 125 --group 8 --workers 2]``
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "rewards"))

from math_cases import rollout_batch  # noqa: E402
from math_verify import parse, verify  # noqa: E402

from k2rl.rewards.math import MathChecker  # noqa: E402


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes, from /proc (Linux); NaN elsewhere."""
    total = 0.0
    try:
        for pid in pids:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")
    return total


def serial(pairs):
    start, cpu = time.perf_counter(), time.process_time()
    verdicts = [bool(verify(parse(gold), parse(response))) for response, gold in pairs]
    return verdicts, time.perf_counter() - start, time.process_time() - cpu


def checked(checker: MathChecker, pairs):
    pids = checker.pool.worker_pids
    start, cpu = time.perf_counter(), cpu_seconds(pids)
    verdicts = checker.check_many(pairs)
    return verdicts, time.perf_counter() - start, cpu_seconds(pids) - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=125)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=50, help="prompts in the warm-up batch")
    parser.add_argument("--target", type=float, default=5.0, help="speed-up the new-prompts batch should reach")
    args = parser.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    warmup = rollout_batch(args.warmup, args.group, seed=99)
    batches = {
        "new prompts": rollout_batch(args.prompts, args.group, seed=1),
        "same prompts, new samples": rollout_batch(args.prompts, args.group, seed=1, sample_seed=2),
    }
    n = len(next(iter(batches.values())))
    chars = sum(len(r) for batch in batches.values() for r, _ in batch) / (2 * n)
    print(f"batches of {n} pairs ({args.prompts} prompts x {args.group} samples), mean response {chars:.0f} chars")

    serial(warmup)
    checker = MathChecker(workers=args.workers)
    start = time.perf_counter()
    checker.check_many([("$1$", "1")] * args.workers + [("$2$", "2")] * args.workers)  # starts the workers
    startup_s = time.perf_counter() - start
    checker.check_many(warmup)
    warmup_s = time.perf_counter() - start - startup_s
    # each batch: baseline, then checker right after, so both meet about the same load from other work
    baseline, ours, loads = {}, {}, []
    for name, pairs in batches.items():
        loads.append(os.getloadavg()[0])
        baseline[name] = serial(pairs)
        ours[name] = checked(checker, pairs)
    loads.append(os.getloadavg()[0])
    restarts, timeouts = checker.pool.restarts, checker.timeouts
    checker.close()

    print(f"checker: {args.workers} workers, start-up {startup_s:.2f} s and warm-up {warmup_s:.2f} s not timed; "
          f"1-min load average {min(loads):.1f} to {max(loads):.1f} during the timed part, on {os.cpu_count()} cores")
    differing = 0
    for name in batches:
        (ref, ref_s, ref_cpu), (got, got_s, got_cpu) = baseline[name], ours[name]
        differ = sum(a != b for a, b in zip(ref, got))
        differing += differ
        print(f"\n[{name}]")
        print(f"  serial math_verify : {n / ref_s:8.1f} checks/s  ({ref_s:.2f} s wall, {ref_cpu:.2f} s CPU)")
        print(f"  k2rl MathChecker   : {n / got_s:8.1f} checks/s  ({got_s:.2f} s wall, {got_cpu:.2f} s CPU in workers)")
        print(f"  speed-up           : {ref_s / got_s:8.2f}x wall clock; work per check {ref_cpu / got_cpu:.2f}x less, "
              f"so {args.workers * ref_cpu / got_cpu:.2f}x on {args.workers} free cores")
        print(f"  verdicts           : {'identical' if not differ else f'{differ} DIFFER'} "
              f"({sum(ref)} equivalent, {n - sum(ref)} not)")
    if restarts or timeouts:
        print(f"\nnote: {timeouts} checks timed out, {restarts} worker restarts (CPU figures then incomplete)")
    (_, ref_s, _), (_, got_s, _) = baseline["new prompts"], ours["new prompts"]
    print(f"\nnew prompts: {n / got_s:.1f} vs {n / ref_s:.1f} checks/s = {ref_s / got_s:.2f}x "
          f"(target {args.target:g}x: {'met' if ref_s / got_s >= args.target else 'NOT met'}); "
          f"verdicts {'identical' if not differing else 'DIFFER'}")
    if differing:
        sys.exit(1)


if __name__ == "__main__":
    main()
