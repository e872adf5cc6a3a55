"""Step time of one rollout batch with scoring overlapped vs. run after generation, in one process.

The reward stands for scoring that waits on something other than this process's CPU -- an LLM judge
on another GPU, a remote sandbox fleet -- which is the case overlap is for: its cost is latency. For
each chunk it waits as long as that chunk took to generate, so scoring costs as much time as
generation however the machine's load drifts. Both runs generate the same batch
in the same chunks (the engine's on-policy micro-batches) with the same seed, so the only difference
is whether chunk k is scored while chunk k+1 generates.

    OMP_NUM_THREADS=1 python benchmarks/rollout_overlap.py [--rows 64 --group 8 --chunks 8 --tokens 32]

Prints the serial sum (generation + scoring), the overlapped wall time, and their ratio; also the
time to generate the whole batch in one unchunked call, so the cost of chunking itself is visible.
"""

from __future__ import annotations

import argparse
import queue
import tempfile
import time

import torch

from k2rl.policy.build import init_policy, load_policy
from k2rl.rollouts.backends import Sampling, TransformersBackend
from k2rl.rollouts.engine import Limits, RolloutEngine
from k2rl.data.arithmetic import arithmetic


class MirroredJudge:
    """A reward that waits, for each chunk it scores, as long as generating that chunk took.

    Scoring costs "about as much as generation" by construction, whatever the machine's load does
    between calibration and measurement. The waiting stands for a judge elsewhere (another GPU, a
    sandbox fleet): latency, not this process's CPU.
    """

    def __init__(self):
        self.durations: queue.Queue = queue.Queue()
        self.__name__ = "mirrored_judge"

    def __call__(self, prompts, completions, completion_ids, **columns):
        time.sleep(self.durations.get())
        return [float(len(ids) % 2) for ids in completion_ids]


class TimedEngine(RolloutEngine):
    """Reports each chunk's generation time to the judge (one reward call per chunk)."""

    def __init__(self, *args, judge=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.judge = judge

    def _advance(self, trajectories):
        started = time.perf_counter()
        super()._advance(trajectories)
        if self.judge is not None:
            self.judge.durations.put(time.perf_counter() - started)


def run(policy, rows, group, chunks, tokens, judge, overlap, seed=0):
    engine = TimedEngine(policy.tokenizer, limits=Limits(token_budget=tokens), reward_funcs=[judge] if judge else [],
                         backend=TransformersBackend(policy.model, policy.tokenizer), overlap=overlap, chunks=chunks,
                         judge=judge)
    torch.manual_seed(seed)
    engine.run(rows, group, Sampling(temperature=1.0))
    return engine.last_stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        policy = load_policy(str(init_policy("k2-tiny", f"{tmp}/policy", seed=0)))
    questions = arithmetic(args.rows // args.group, seed=0)["question"]
    rows = [{"prompt": [{"role": "user", "content": q}]} for q in questions for _ in range(args.group)]

    run(policy, rows, args.group, args.chunks, args.tokens, None, False)  # warm-up
    judge = MirroredJudge()
    whole = run(policy, rows, args.group, 1, args.tokens, None, False).generate_s

    serial, overlapped = [], []
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
        stats = run(policy, rows, args.group, args.chunks, args.tokens, judge, False)
        serial.append((stats.generate_s + stats.score_s, stats.generate_s, stats.score_s))
        stats = run(policy, rows, args.group, args.chunks, args.tokens, judge, True)
        overlapped.append(stats.wall_s)
        print(f"  serial {serial[-1][0]:.2f} s, overlapped {stats.wall_s:.2f} s "
              f"(its generation {stats.generate_s:.2f} s, scoring {stats.score_s:.2f} s); "
              f"ratio {stats.wall_s / serial[-1][0]:.2f}", flush=True)
    serial_sum, gen_s, score_s = min(serial)
    best = min(overlapped)
    print(f"batch: {args.rows} rollouts ({args.rows // args.group} groups of {args.group}), {args.tokens} tokens, "
          f"{args.chunks} chunks; torch threads {torch.get_num_threads()}")
    print(f"generation, one unchunked call: {whole:.2f} s")
    print(f"serial:     generation {gen_s:.2f} s + scoring {score_s:.2f} s = {serial_sum:.2f} s")
    print(f"overlapped: {best:.2f} s (runs: {', '.join(f'{w:.2f}' for w in overlapped)})")
    print(f"ratio overlapped / serial sum: {best / serial_sum:.2f}")


if __name__ == "__main__":
    main()
