"""Labelled critic comparisons kept for a critic that trains several steps per RL step.

Verifier labels do not go stale the way policy-gradient data does: "the sample that passed is the
better one" stays true after the policy has moved on. What changes is which comparisons the policy's
samples offer. The replay therefore has two parts:

- **recent**: the newest ``recent`` comparisons, oldest dropped first, so the critic keeps up with
  what the policy writes now;
- **reservoir**: a uniform sample of every comparison seen so far (reservoir sampling), so what the
  verifier taught early is not forgotten once the policy stops producing such pairs: with recent pairs
  only, a critic learns that worked answers beat bare guesses while those pairs exist, then loses
  much of it once the policy has switched style (benchmarks/critic_agreement.py and rewards/README.md
  have the measured agreement with and without the reservoir).

A draw takes half its comparisons from each part (all from recent while the reservoir is off or
empty). A comparison is its two orders (winner as A, winner as B), kept and drawn together.
"""

from __future__ import annotations

import random
from collections import deque

Comparison = tuple  # ((messages, "Verdict: A"), (messages, "Verdict: B"))


class LabelReplay:
    """Recent comparisons plus a reservoir sample of all of them; not thread-safe (callers lock)."""

    def __init__(self, recent: int, reservoir: int = 0, seed: int = 0):
        if recent < 1 or reservoir < 0:
            raise ValueError(f"LabelReplay needs recent >= 1 and reservoir >= 0, got {recent} and {reservoir}")
        self.recent: deque = deque(maxlen=recent)
        self.reservoir: list = []
        self.reservoir_size = reservoir
        self.seen = 0  # comparisons ever added: the reservoir keeps each with probability size / seen
        self._rng = random.Random(seed)

    def __len__(self) -> int:
        """Comparisons held, counted per part (one kept in both recent and reservoir counts twice)."""
        return len(self.recent) + len(self.reservoir)

    def add(self, comparisons: list[Comparison]) -> None:
        for comparison in comparisons:
            self.recent.append(comparison)
            self.seen += 1
            if len(self.reservoir) < self.reservoir_size:
                self.reservoir.append(comparison)
            elif self.reservoir_size:
                slot = self._rng.randrange(self.seen)
                if slot < self.reservoir_size:
                    self.reservoir[slot] = comparison

    def draw(self, n: int) -> list[Comparison]:
        """Up to ``n`` comparisons, half from the reservoir when it holds any, without repeats within a part."""
        from_reservoir = min(n // 2, len(self.reservoir))
        from_recent = min(n - from_reservoir, len(self.recent))
        return self._rng.sample(list(self.recent), from_recent) + self._rng.sample(self.reservoir, from_reservoir)

    def state(self) -> dict:
        """Plain JSON-able data (for checkpoints)."""
        return {"recent": [list(c) for c in self.recent], "reservoir": [list(c) for c in self.reservoir], "seen": self.seen}

    def load_state(self, state: dict) -> None:
        self.recent.clear()
        self.recent.extend(_comparisons(state["recent"]))
        self.reservoir = _comparisons(state["reservoir"])[: self.reservoir_size]
        self.seen = state["seen"]


def _comparisons(items: list) -> list[Comparison]:
    """Comparisons back from JSON, where tuples became lists."""
    return [tuple((messages, answer) for messages, answer in comparison) for comparison in items]
