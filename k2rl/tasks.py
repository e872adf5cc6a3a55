"""Built-in verifiable tasks, generated procedurally so no download is ever needed.

The arithmetic task asks short word problems with exact integer answers. Train and held-out items
come from different random seeds, and any held-out question is removed from the training side, so the
two never share an item: held-out accuracy measures generalisation, not memorisation.
"""

from __future__ import annotations

import random

from datasets import Dataset

from k2rl.errors import K2RLError

_NAMES = ["Ada", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea"]
_ITEMS = ["apples", "books", "coins", "marbles", "pencils", "stickers", "cards", "shells"]

# (template, operation). Word problems and bare expressions share one answer format.
_TEMPLATES = [
    ("What is {a} + {b}?", "+"),
    ("What is {a} - {b}?", "-"),
    ("{name} has {a} {item} and gets {b} more. How many {item} does {name} have?", "+"),
    ("{name} has {a} {item} and gives away {b}. How many {item} are left?", "-"),
    ("A box holds {a} {item}. Another holds {b}. How many {item} in total?", "+"),
]

ANSWER_FORMAT = "The answer is {answer}."


def _item(rng: random.Random, max_operand: int, max_second_operand: int | None) -> dict:
    template, op = rng.choice(_TEMPLATES)
    a = rng.randint(0, max_operand)
    b = rng.randint(0, max_operand if max_second_operand is None else max_second_operand)
    if op == "-" and b > a:
        a, b = b, a  # keep answers non-negative: the task is about arithmetic, not sign conventions
    question = template.format(a=a, b=b, name=rng.choice(_NAMES), item=rng.choice(_ITEMS))
    answer = a + b if op == "+" else a - b
    return {"question": question, "answer": str(answer)}


def arithmetic(
    size: int,
    seed: int,
    max_operand: int = 99,
    max_second_operand: int | None = None,
    exclude: set[str] | None = None,
) -> Dataset:
    """``size`` distinct word problems (columns ``question``, ``answer``), none of them in ``exclude``.

    Operands are drawn from ``0..max_operand``; ``max_second_operand`` narrows the second one (small
    second operands make a task of carries and borrows rather than of memorised sums).
    """
    exclude = exclude or set()
    rng = random.Random(seed)
    rows, seen = [], set(exclude)
    attempts = 0
    while len(rows) < size:
        attempts += 1
        if attempts > 50 * size + 1000:
            raise K2RLError(f"arithmetic task: cannot draw {size} distinct items with max_operand={max_operand}")
        row = _item(rng, max_operand, max_second_operand)
        if row["question"] in seen:
            continue
        seen.add(row["question"])
        rows.append(row)
    return Dataset.from_list(rows)


def arithmetic_splits(train_size: int, eval_size: int, seed: int, **options) -> tuple[Dataset, Dataset]:
    """Held-out items first (their own seed), then training items drawn around them."""
    eval_set = arithmetic(eval_size, seed=2 * seed + 1, **options)
    train_set = arithmetic(train_size, seed=2 * seed, exclude=set(eval_set["question"]), **options)
    return train_set, eval_set


def _coding_splits(train_size: int, eval_size: int, seed: int, **options) -> tuple[Dataset, Dataset]:
    from k2rl.coding_tasks import coding_splits

    return coding_splits(train_size, eval_size, seed, **options)


BUILTIN_TASKS = {"arithmetic": arithmetic_splits, "coding": _coding_splits}
