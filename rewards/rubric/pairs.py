"""Which samples the critic compares: groups of one prompt's samples, and a bounded set of pairs in each.

Comparing every pair of K samples costs K(K-1)/2 critic calls per order and rubric; the recipe bounds
that with ``pairs_per_group``. Pairs are drawn as a sequence of random perfect matchings (shuffle,
pair neighbours, repeat), so ``pairs_per_group >= K/2`` compares every sample at least once and
extra pairs spread evenly, instead of a few samples being compared often and others never.
"""

from __future__ import annotations

import json
import random
import zlib
from itertools import combinations

from k2rl.errors import K2RLError


def _prompt_key(prompt) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, default=str)


def group_indices(prompts: list, group_size: int | None = None) -> list[list[int]]:
    """Index groups of samples that answer the same prompt.

    With ``group_size`` (GRPO's ``num_generations``) the batch is cut into consecutive chunks of that
    size, TRL's layout; a chunk whose prompts differ is a wiring error. Without it, consecutive runs
    of equal prompts form the groups.
    """
    n = len(prompts)
    if group_size:
        if n % group_size:
            raise K2RLError(f"reward 'rubric': {n} samples do not split into groups of {group_size}")
        groups = [list(range(start, start + group_size)) for start in range(0, n, group_size)]
        for group in groups:
            if len({_prompt_key(prompts[i]) for i in group}) != 1:
                raise K2RLError(f"reward 'rubric': group_size={group_size} but a group mixes different prompts")
        return groups
    groups: list[list[int]] = []
    previous = None
    for i, prompt in enumerate(prompts):
        key = _prompt_key(prompt)
        if groups and key == previous:
            groups[-1].append(i)
        else:
            groups.append([i])
        previous = key
    return groups


def group_rng(seed: int, texts: list[str]) -> random.Random:
    """A generator fixed by the seed and the group's samples: reruns repeat, new samples get new pairs."""
    return random.Random(zlib.crc32("\x00".join([str(seed), *texts]).encode()))


def sample_pairs(members: list[int], max_pairs: int, rng: random.Random) -> list[tuple[int, int]]:
    """Up to ``max_pairs`` distinct unordered pairs of ``members``, drawn as successive random matchings."""
    all_pairs = len(members) * (len(members) - 1) // 2
    want = min(max_pairs, all_pairs)
    if want == all_pairs:
        return list(combinations(members, 2))
    chosen: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    while len(chosen) < want:
        order = list(members)
        rng.shuffle(order)
        for a, b in zip(order[0::2], order[1::2]):
            pair = (min(a, b), max(a, b))
            if pair not in seen:
                seen.add(pair)
                chosen.append(pair)
                if len(chosen) == want:
                    break
    return chosen
