"""The built-in coding task: write one small list function; hidden unit tests decide the reward.

Every problem composes two operations, a *filter* with a constant (``greater than 17``, ``less than
17``, ``a multiple of 17``) and an *aggregate* over the items it keeps (count them, sum them, keep
them, ask whether there is any): ``count_gt(xs)`` returns how many items of ``xs`` are greater than 17.
The hidden tests always include the edge cases a careless solution gets wrong: the empty list, a
list holding exactly the constant (the boundary), negatives.

Every solution opens by naming the constant (``K = 17``) and uses ``K`` below. Demonstrations are the
warm start's SFT data, and like real SFT data they are not all right: a
``buggy_fraction`` of them carry the annotator's habitual slip for their filter (``>=`` for
``greater than``, ``<=`` for ``less than``, ``x % K`` for ``a multiple of K``). A slip passes the tests
away from the boundary and fails the ones on it, so it earns part of the ``pass_fraction`` reward and
none of ``all_or_nothing``.

Held-out items never share a constant with training items. Two held-out splits (the ``heldout``
column): ``new_constants`` (the training combinations of filter and aggregate) and
``new_combinations`` (combinations training never shows, each made of a filter and an aggregate it
does show), to see whether what RL teaches transfers.

For other coding data, point ``data.source`` at a JSONL file with ``question``, ``answer`` (a
reference solution), ``tests`` and ``entry_point`` columns, or use ``humaneval``.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from k2rl.errors import K2RLError

if TYPE_CHECKING:
    from datasets import Dataset

INSTRUCTIONS = "Answer with one ```python code block."

# filter -> (phrase, correct condition, the habitual slip); {k} is the item's constant, K its name in code.
FILTERS = {
    "gt": ("greater than {k}", "x > K", "x >= K"),
    "lt": ("less than {k}", "x < K", "x <= K"),
    "mult": ("a multiple of {k}", "x % K == 0", "x % K"),
}
# aggregate -> (task, body); {phrase} is the filter's phrase, {cond} its condition.
AGGREGATES = {
    "count": ("returns how many items of the list xs are {phrase}", "sum(1 for x in xs if {cond})"),
    "sum": ("returns the sum of the items of the list xs that are {phrase}", "sum(x for x in xs if {cond})"),
    "keep": ("returns, in order, the items of the list xs that are {phrase}", "[x for x in xs if {cond}]"),
    "any": ("returns True when an item of the list xs is {phrase}", "any({cond} for x in xs)"),
}
# Combinations training never shows: each filter and each aggregate once, so every part is seen elsewhere.
HELD_OUT_COMBINATIONS = (("gt", "any"), ("lt", "keep"), ("mult", "sum"))
CONSTANTS = range(10, 100)  # two digits each: the question ends the same number of tokens after it
HELD_OUT_CONSTANT_SHARE = 0.25


def _test_lists(k: int) -> list[list[int]]:
    """Inputs for the hidden tests: empty, the boundary, both sides of it, negatives with zero."""
    return [[], [k], [k - 1, k + 1], [-k, 0, 2 * k, k], [-1], [3 * k, k + 2, k]]


def _function(name: str, aggregate: str, condition: str, k: int) -> str:
    """The solution opens by naming the constant, as the question's last words state it: a copy over a fixed
    distance, which the tiny policy learns reliably (copying it into the middle of a condition is not)."""
    return f"K = {k}\n\ndef {name}(xs):\n    return {AGGREGATES[aggregate][1].format(cond=condition)}\n"


def _fenced(code: str) -> str:
    return f"```python\n{code}```"


def _run_reference(name: str, reference: str):
    """The reference solution as a callable, to compute the expected outputs of the asserts."""
    namespace: dict = {}
    exec(reference, namespace)  # noqa: S102 - our own reference solution
    return namespace[name]


def _tests(name: str, solve, k: int) -> str:
    return "\n".join(f"assert {name}({xs!r}) == {solve(xs)!r}" for xs in _test_lists(k))


def coding_item(filter_name: str, aggregate: str, k: int, buggy: bool = False) -> dict:
    """One problem: question, reference ``answer``, hidden ``tests``, ``entry_point`` and its demonstration.

    ``demonstration`` is the warm start's target text (with the slip when ``buggy``).
    """
    phrase, correct, slip = (part.format(k=k) for part in FILTERS[filter_name])
    name = f"{aggregate}_{filter_name}"
    reference = _function(name, aggregate, correct, k)
    written = _function(name, aggregate, slip, k) if buggy else reference
    task = AGGREGATES[aggregate][0].format(phrase=phrase)
    solve = _run_reference(name, reference)
    return {
        # The instructions first and the constant last: the tiny policy copies it from a short distance.
        "question": f"{INSTRUCTIONS} Write a Python function {name}(xs) that {task}.",
        "answer": _fenced(reference),
        "tests": _tests(name, solve, k),
        "entry_point": name,
        "demonstration": _fenced(written),
    }


def split_constants(seed: int) -> tuple[list[int], list[int]]:
    """(training constants, held-out constants): a seeded partition of ``CONSTANTS``."""
    constants = list(CONSTANTS)
    random.Random(f"coding-constants-{seed}").shuffle(constants)
    cut = round(len(constants) * HELD_OUT_CONSTANT_SHARE)
    return sorted(constants[cut:]), sorted(constants[:cut])


def combinations() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(training combinations, held-out combinations) of filter and aggregate."""
    every = [(f, a) for f in FILTERS for a in AGGREGATES]
    return [c for c in every if c not in HELD_OUT_COMBINATIONS], list(HELD_OUT_COMBINATIONS)


def held_out_problems() -> int:
    """How many distinct held-out problems exist (every held-out constant with every combination; the
    seed only chooses which constants)."""
    return round(len(CONSTANTS) * HELD_OUT_CONSTANT_SHARE) * sum(map(len, combinations()))


def check_eval_size(eval_size: int) -> None:
    """The coding task's held-out side is a fixed set: a larger ``data.eval_size`` is refused, not cut."""
    if eval_size > (total := held_out_problems()):
        raise K2RLError(f"coding task: data.eval_size {eval_size} is more than the {total} held-out problems "
                        f"that exist; lower data.eval_size (at most {total})")


def coding_splits(train_size: int, eval_size: int, seed: int, buggy_fraction: float = 0.0) -> tuple[Dataset, Dataset]:
    """Training rows (a problem may repeat, each time with its own demonstration draw) and held-out rows.

    The held-out side is every held-out problem once -- ``new_constants`` first, then
    ``new_combinations`` -- in a seeded order within each split, cut to ``eval_size`` proportionally.
    """
    if not 0.0 <= buggy_fraction <= 1.0:
        raise K2RLError(f"coding task: buggy_fraction must be between 0 and 1, got {buggy_fraction}")
    check_eval_size(eval_size)
    train_constants, held_out_constants = split_constants(seed)
    train_combinations, held_out_combinations = combinations()
    rng = random.Random(f"coding-{seed}")
    train = []
    for _ in range(train_size):
        filter_name, aggregate = rng.choice(train_combinations)
        k, buggy = rng.choice(train_constants), rng.random() < buggy_fraction
        rng.random()  # the draw of the removed tool variant: kept, so the rows stay those the README measured
        train.append(coding_item(filter_name, aggregate, k, buggy=buggy))
    held_out = []
    for split, combos in (("new_constants", train_combinations), ("new_combinations", held_out_combinations)):
        rows = [{**coding_item(f, a, k), "heldout": split}
                for f, a in combos for k in held_out_constants]
        rng.shuffle(rows)
        held_out.append(rows)
    if eval_size < (total := sum(len(rows) for rows in held_out)):
        first = max(1, round(eval_size * len(held_out[0]) / total))
        held_out = [held_out[0][:first], held_out[1][: max(eval_size - first, 1)]]
    from datasets import Dataset  # imported here: recipe checks read this module before heavy imports

    return Dataset.from_list([{**r, "heldout": "train"} for r in train]), \
        Dataset.from_list([r for rows in held_out for r in rows])
