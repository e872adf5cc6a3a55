"""Benchmark: k2rl's math checker against serial math-verify, on one GRPO-like batch, in one run.

Baseline: ``math_verify.verify(parse(gold), parse(response))`` for every pair, one after another in
this process (math-verify's signal timeouts on, as its documentation runs it). Candidate:
``MathChecker.check_many`` on the same pairs. Both first check the same warm-up batch (other
prompts, other seed), as a long-lived checker inside a training run is warm: SymPy's caches and the
LaTeX grammar's prediction tables fill up in each process over its first few hundred checks. The
checker's start-up and warm-up times are printed separately. Verdicts must be identical.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=125)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=50, help="prompts in the warm-up batch")
    args = parser.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    pairs = rollout_batch(args.prompts, args.group)
    print(f"{len(pairs)} pairs ({args.prompts} prompts x {args.group} samples), "
          f"mean response {sum(len(r) for r, _ in pairs) / len(pairs):.0f} chars")

    warmup = rollout_batch(args.warmup, args.group, seed=99)
    for response, gold in warmup:
        verify(parse(gold), parse(response))
    start = time.perf_counter()
    baseline = [bool(verify(parse(gold), parse(response))) for response, gold in pairs]
    serial_s = time.perf_counter() - start

    checker = MathChecker(workers=args.workers)
    start = time.perf_counter()
    checker.check_many([("$1$", "1")])  # starts the workers
    startup_s = time.perf_counter() - start
    checker.check_many(warmup)
    warmup_s = time.perf_counter() - start - startup_s
    start = time.perf_counter()
    ours = checker.check_many(pairs)
    ours_s = time.perf_counter() - start
    checker.close()

    mismatches = sum(a != b for a, b in zip(baseline, ours))
    print(f"serial math_verify : {len(pairs) / serial_s:8.1f} checks/s ({serial_s:.2f} s)")
    print(f"k2rl MathChecker   : {len(pairs) / ours_s:8.1f} checks/s ({ours_s:.2f} s, "
          f"{args.workers} workers; start-up {startup_s:.2f} s and warm-up {warmup_s:.2f} s not included)")
    print(f"speed-up           : {serial_s / ours_s:8.2f}x")
    print(f"verdicts           : {'identical' if not mismatches else f'{mismatches} DIFFER'} "
          f"({sum(baseline)} equivalent, {len(pairs) - sum(baseline)} not; timeouts {checker.timeouts})")


if __name__ == "__main__":
    main()
