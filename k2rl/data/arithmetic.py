"""Built-in verifiable tasks, generated procedurally so no download is ever needed.

The arithmetic task asks short word problems with exact integer answers. Train and held-out items
come from different random seeds, and any held-out question is removed from the training side, so the
two never share an item: held-out accuracy measures generalisation, not memorisation.
"""

from __future__ import annotations

import inspect
import random
from typing import TYPE_CHECKING

from k2rl.errors import K2RLError

if TYPE_CHECKING:
    from datasets import Dataset

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
WORKED_STEP = "{left} {op} {right} = {result}."
# Lead-ins of worked demonstrations, as different annotators phrase them; each starts with its own token.
WORKED_LEAD_INS = ("So:", "Now:", "Here:", "Work:")


def _item(rng: random.Random, max_operand: int, max_second_operand: int | None) -> dict:
    template, op = rng.choice(_TEMPLATES)
    a = rng.randint(0, max_operand)
    b = rng.randint(0, max_operand if max_second_operand is None else max_second_operand)
    if op == "-" and b > a:
        a, b = b, a  # keep answers non-negative: the task is about arithmetic, not sign conventions
    question = template.format(a=a, b=b, name=rng.choice(_NAMES), item=rng.choice(_ITEMS))
    answer = a + b if op == "+" else a - b
    return {"question": question, "answer": str(answer), "steps": [WORKED_STEP.format(left=a, op=op, right=b, result=answer)]}


def _chain_item(rng: random.Random, terms: int, max_operand: int) -> dict:
    """``What is a + b - c?``: several one-step operations, left to right, never below zero."""
    total = rng.randint(0, max_operand)
    expression, steps = str(total), []
    for _ in range(terms - 1):
        operand = rng.randint(0, max_operand)
        op = "-" if operand <= total and rng.random() < 0.5 else "+"
        result = total + operand if op == "+" else total - operand
        expression += f" {op} {operand}"
        steps.append(WORKED_STEP.format(left=total, op=op, right=operand, result=result))
        total = result
    return {"question": f"What is {expression}?", "answer": str(total), "steps": steps}


def demonstration_text(row: dict) -> str:
    """What a row teaches in the warm start: its ``demonstration`` where it has one, else the bare answer."""
    return row.get("demonstration") or ANSWER_FORMAT.format(answer=row["answer"])


def _demonstration(row: dict, worked: bool, lead_in: str | None = None) -> str:
    """The warm start's target text: the bare answer, or the worked steps (after ``lead_in``) followed by it."""
    answer = ANSWER_FORMAT.format(answer=row["answer"])
    if not worked:
        return answer
    return " ".join([*([lead_in] if lead_in else []), *row["steps"], answer])


def distinct_items(max_operand: int, max_second_operand: int | None, terms: int) -> int:
    """How many distinct questions the generator can draw at most (so an impossible size fails at once)."""
    if terms > 2:
        return (max_operand + 1) ** terms * 2 ** (terms - 1)
    pairs = (max_operand + 1) * ((max_operand if max_second_operand is None else max_second_operand) + 1)
    return sum(pairs * (len(_NAMES) if "{name}" in t else 1) * (len(_ITEMS) if "{item}" in t else 1)
               for t, _ in _TEMPLATES)


def arithmetic(
    size: int,
    seed: int,
    max_operand: int = 99,
    max_second_operand: int | None = None,
    terms: int = 2,
    worked_fraction: float = 0.0,
    worked_lead_ins: int = 0,
    exclude: set[str] | None = None,
) -> Dataset:
    """``size`` distinct problems (columns ``question``, ``answer``, ``demonstration``), none in ``exclude``.

    Operands are drawn from ``0..max_operand``. With ``terms=2`` the problems are one-step word
    problems; ``max_second_operand`` narrows the second operand (small second operands make a task of
    carries and borrows rather than of memorised sums). With ``terms>=3`` they are chains such as
    ``What is 7 + 5 - 3?``.

    ``demonstration`` is what the warm start imitates: for a ``worked_fraction`` of the rows the worked
    steps before the answer, otherwise the bare answer. Real SFT data mixes the two styles too; which
    style pays off is then for RL to find out.
    """
    if terms < 2:
        raise K2RLError(f"arithmetic task: terms must be at least 2, got {terms}")
    if terms > 2 and max_second_operand is not None:
        raise K2RLError("arithmetic task: max_second_operand applies to two-term problems only; drop it or set terms: 2")
    if not 0 <= worked_lead_ins <= len(WORKED_LEAD_INS):
        raise K2RLError(f"arithmetic task: worked_lead_ins must be between 0 and {len(WORKED_LEAD_INS)}, got {worked_lead_ins}")
    if not 0.0 <= worked_fraction <= 1.0:
        raise K2RLError(f"arithmetic task: worked_fraction must be between 0 and 1, got {worked_fraction}")
    exclude = exclude or set()
    capacity = distinct_items(max_operand, max_second_operand, terms)
    if size + len(exclude) > capacity:
        raise K2RLError(f"arithmetic task: {size} distinct items{f' besides {len(exclude)} held out' if exclude else ''} "
                        f"cannot be drawn: at most {capacity} exist with max_operand={max_operand}, terms={terms} "
                        "(lower data.eval_size / data.train_size, or raise data.options.max_operand)")
    rng = random.Random(seed)
    style_rng = random.Random(f"{seed}-style")  # the style draw never changes which items are drawn
    lead_in_rng = random.Random(f"{seed}-lead-in")  # nor does the lead-in draw change the style draw
    rows, seen = [], set(exclude)
    attempts = 0
    while len(rows) < size:
        attempts += 1
        if attempts > 50 * size + 1000:
            raise K2RLError(f"arithmetic task: cannot draw {size} distinct items with max_operand={max_operand}")
        row = _item(rng, max_operand, max_second_operand) if terms == 2 else _chain_item(rng, terms, max_operand)
        if row["question"] in seen:
            continue
        seen.add(row["question"])
        worked = style_rng.random() < worked_fraction
        lead_in = WORKED_LEAD_INS[lead_in_rng.randrange(worked_lead_ins)] if worked and worked_lead_ins else None
        rows.append({"question": row["question"], "answer": row["answer"], "demonstration": _demonstration(row, worked, lead_in)})
    from datasets import Dataset  # imported here: recipe checks read this module before heavy imports

    return Dataset.from_list(rows)


def arithmetic_splits(train_size: int, eval_size: int, seed: int, **options) -> tuple[Dataset, Dataset]:
    """Held-out items first (their own seed), then training items drawn around them."""
    eval_set = arithmetic(eval_size, seed=2 * seed + 1, **options)
    train_set = arithmetic(train_size, seed=2 * seed, exclude=set(eval_set["question"]), **options)
    return train_set, eval_set


def arithmetic_options() -> list[str]:
    return [p for p in inspect.signature(arithmetic).parameters if p not in ("size", "seed", "exclude")] + ["seed"]


def _split_options(module: str, name: str) -> list[str]:
    """The data.options a task's ``*_splits(train_size, eval_size, seed, ...)`` generator takes."""
    import importlib

    splits = getattr(importlib.import_module(module), name)
    return [p for p in inspect.signature(splits).parameters if p not in ("train_size", "eval_size", "seed")] + ["seed"]


def _coding_options() -> list[str]:
    return _split_options("k2rl.data.coding", "coding_splits")


def _coding_splits(train_size: int, eval_size: int, seed: int, **options) -> tuple[Dataset, Dataset]:
    from k2rl.data.coding import coding_splits

    return coding_splits(train_size, eval_size, seed, **options)


def _reasoning_gym_splits(train_size: int, eval_size: int, seed: int, **options) -> tuple[Dataset, Dataset]:
    from k2rl.data.reasoning_gym import reasoning_gym_splits

    return reasoning_gym_splits(train_size, eval_size, seed, **options)


def _tool_use_splits(train_size: int, eval_size: int, seed: int, **options) -> tuple[Dataset, Dataset]:
    from k2rl.data.tool_use import tool_use_splits

    return tool_use_splits(train_size, eval_size, seed, **options)


def _verifiers_splits(train_size: int, eval_size: int, seed: int, **options) -> tuple[Dataset, Dataset]:
    from k2rl.data.verifiers_tasks import verifiers_splits

    return verifiers_splits(train_size, eval_size, seed, **options)


BUILTIN_TASKS = {"arithmetic": arithmetic_splits, "coding": _coding_splits, "reasoning_gym": _reasoning_gym_splits,
                 "tool_use": _tool_use_splits, "verifiers": _verifiers_splits}
# The data.options each built-in task takes (checked before any row is drawn).
TASK_OPTIONS = {"arithmetic": arithmetic_options, "coding": _coding_options,
                "reasoning_gym": lambda: ["tasks", "size", "seed"],
                "tool_use": lambda: _split_options("k2rl.data.tool_use", "tool_use_splits"),
                "verifiers": lambda: _split_options("k2rl.data.verifiers_tasks", "verifiers_splits")}


def check_task_options(source: str, options: dict, eval_size: int | None = None) -> None:
    """Each ``data.options`` key is an option of the built-in task ``source`` (one line naming the others),
    and an arithmetic held-out set of ``eval_size`` can exist -- both known before a row is drawn."""
    from k2rl.config.suggest import did_you_mean

    if source not in TASK_OPTIONS:
        return
    known = TASK_OPTIONS[source]()
    for key in options:
        if key not in known:
            raise K2RLError(f"data.options.{key}: not an option of the built-in task {source!r} "
                            f"(its options: {', '.join(known)}){did_you_mean(key, known)}")
    if source == "coding" and eval_size is not None:
        from k2rl.data.coding import check_eval_size

        check_eval_size(eval_size)
    if source == "arithmetic" and eval_size is not None:
        terms, max_operand = options.get("terms", 2), options.get("max_operand", 99)
        if isinstance(terms, int) and isinstance(max_operand, int) and isinstance(
                options.get("max_second_operand", 0), (int, type(None))):
            capacity = distinct_items(max_operand, options.get("max_second_operand"), terms)
            if eval_size > capacity:
                raise K2RLError(f"arithmetic task: {eval_size} distinct items cannot be drawn: at most {capacity} "
                                f"exist with max_operand={max_operand}, terms={terms} (lower data.eval_size, or "
                                "raise data.options.max_operand)")
