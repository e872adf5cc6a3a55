"""A built-in coding task: write one small Python function; hidden unit tests decide the reward.

Enough for the coding recipe to run its mechanics end to end offline (the policy writes code, may run
it through the sandboxed ``python`` tool, and its final answer is scored by ``unit_tests``). Each
problem template takes a constant, so train and held-out items differ; the held-out side uses
constants the training side never sees. For a real benchmark, name ``data.eval_source: humaneval``
(:mod:`k2rl.data.humaneval`), or point ``data.source`` at a JSONL file with ``question``, ``answer``
(a reference solution), ``tests`` and ``entry_point`` columns.
"""

from __future__ import annotations

import random

from datasets import Dataset

INSTRUCTIONS = (
    "You can run Python with the python tool before answering. "
    "Give your final solution as one ```python code block."
)

# (function name, task, reference solution, test inputs); {k} is the item's constant.
_PROBLEMS = [
    ("add_k", "returns x plus {k}", "def add_k(x):\n    return x + {k}\n", ["0", "5", "-3"]),
    ("times_k", "returns x times {k}", "def times_k(x):\n    return x * {k}\n", ["0", "2", "-7"]),
    ("is_multiple", "returns True when x is a multiple of {k}", "def is_multiple(x):\n    return x % {k} == 0\n",
     ["0", "{k}", "{k} + 1", "3 * {k}"]),
    ("count_big", "returns how many numbers in the list xs are greater than {k}",
     "def count_big(xs):\n    return sum(1 for x in xs if x > {k})\n", ["[]", "[{k}, {k} + 1, 100]", "[-5, 0, 1]"]),
    ("repeat_word", "returns the string s repeated {k} times", "def repeat_word(s):\n    return s * {k}\n",
     ["''", "'ab'", "'x'"]),
    ("clip_high", "returns x, but at most {k}", "def clip_high(x):\n    return min(x, {k})\n", ["{k} - 1", "{k} + 9", "-50"]),
    ("last_digits", "returns x modulo {k} (x is never negative)", "def last_digits(x):\n    return x % {k}\n",
     ["0", "12345", "{k}"]),
    ("sum_first", "returns the sum of the first {k} items of the list xs",
     "def sum_first(xs):\n    return sum(xs[:{k}])\n", ["[]", "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]", "[5]"]),
]


def _item(problem, k: int) -> dict:
    name, task, solution, inputs = problem
    solution = solution.format(k=k)
    namespace: dict = {}
    exec(solution, namespace)  # noqa: S102 - our own reference solution, to compute the expected outputs
    asserts = []
    for raw in inputs:
        arg = raw.format(k=k)
        asserts.append(f"assert {name}({arg}) == {namespace[name](eval(arg))!r}")  # noqa: S307 - our own literals
    return {
        "question": f"Write a Python function {name}(...) that {task.format(k=k)}. {INSTRUCTIONS}",
        "answer": f"```python\n{solution}```",
        "tests": "\n".join(asserts),
        "entry_point": name,
    }


def coding_splits(train_size: int, eval_size: int, seed: int) -> tuple[Dataset, Dataset]:
    """Items cycle through the templates; held-out constants (odd) never appear in training (even)."""
    rng = random.Random(seed)

    def draw(size: int, parity: int) -> Dataset:
        return Dataset.from_list([_item(_PROBLEMS[i % len(_PROBLEMS)], 2 * rng.randint(1, 20) + parity)
                                  for i in range(size)])

    return draw(train_size, 0), draw(eval_size, 1)
