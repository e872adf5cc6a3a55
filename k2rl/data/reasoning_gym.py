"""reasoning-gym tasks as a data source: procedural items with their own verifiers (optional extra).

``data.source: reasoning_gym`` with ``data.options: {tasks: [...], size: N, seed: S}``. ``tasks`` names
reasoning-gym datasets (``chain_sum``, ``leg_counting``, ...), each either a name or ``{name: ...,
<its config fields>}``; ``size`` is the number of training items per task (default: ``data.train_size``
shared out); ``seed`` defaults to the run's seed. Training items come from seed ``2S``, held-out items
from seed ``2S + 1`` (the arithmetic task's convention), and a held-out question is never a training
one. Each row keeps its task (``task`` column, for ``eval.by: task``) and its reasoning-gym entry
(``rg_entry``, JSON), from which the ``reasoning_gym`` reward asks the task's own ``score_answer``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from k2rl.errors import K2RLError

if TYPE_CHECKING:
    from datasets import Dataset

EXTRA = "reasoning-gym is not installed: pip install 'k2rl[reasoning-gym]'"


def import_reasoning_gym(feature: str):
    """The ``reasoning_gym`` module, or one error line naming the extra."""
    try:
        import reasoning_gym
    except ImportError:
        raise K2RLError(f"{feature}: {EXTRA}") from None
    return reasoning_gym


def _task_specs(tasks) -> list[tuple[str, dict]]:
    if not tasks or not isinstance(tasks, list):
        raise K2RLError("data.options.tasks: list the reasoning-gym tasks, e.g. [chain_sum, leg_counting]")
    specs = []
    for task in tasks:
        if isinstance(task, str):
            specs.append((task, {}))
        elif isinstance(task, dict) and isinstance(task.get("name"), str):
            specs.append((task["name"], {k: v for k, v in task.items() if k != "name"}))
        else:
            raise K2RLError(f"data.options.tasks: each task is a name or {{name: ..., <config>}}, got {task!r}")
    return specs


def _items(rg, name: str, config: dict, size: int, seed: int, exclude: set[str]) -> list[dict]:
    known = rg.factory.DATASETS
    if name not in known:
        raise K2RLError(f"data.options.tasks: unknown reasoning-gym task {name!r} ({len(known)} known, e.g. "
                        f"{', '.join(sorted(known)[:6])})")
    try:  # a few more than needed, so dropping held-out questions still leaves ``size``
        dataset = rg.create_dataset(name, **config, size=size + len(exclude), seed=seed)
    except (TypeError, ValueError, AssertionError) as exc:
        raise K2RLError(f"data.options.tasks: reasoning-gym task {name!r}: {str(exc).splitlines()[0]}") from None
    rows = []
    for entry in dataset:
        if entry["question"] in exclude:
            continue
        rows.append({"question": entry["question"], "answer": str(entry["answer"]), "task": name,
                     "rg_entry": json.dumps({"answer": entry["answer"], "metadata": entry["metadata"]}, default=str)})
        if len(rows) == size:
            break
    return rows


def reasoning_gym_splits(train_size: int, eval_size: int, seed: int, tasks=None, size: int | None = None,
                         **unknown) -> tuple[Dataset, Dataset]:
    """(training, held-out) rows over ``tasks``; held-out items first, from their own seed."""
    rg = import_reasoning_gym("data.source: reasoning_gym")
    if unknown:
        raise K2RLError(f"data.options: unknown for reasoning_gym: {sorted(unknown)} (known: tasks, size, seed)")
    specs = _task_specs(tasks)
    base = seed
    per_task = size or max(1, train_size // len(specs))
    held_out_per_task = max(1, eval_size // len(specs))
    train, held_out = [], []
    for name, config in specs:
        held = _items(rg, name, config, held_out_per_task, 2 * base + 1, set())
        held_out += held
        train += _items(rg, name, config, per_task, 2 * base, {row["question"] for row in held})
    from datasets import Dataset  # here, so the reasoning_gym reward loads without datasets

    return Dataset.from_list(train), Dataset.from_list(held_out)
