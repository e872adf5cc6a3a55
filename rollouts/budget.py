"""Per-task token budgets: which budget a row gets, and cutting sampled responses at it.

Different tasks deserve different lengths (an arithmetic answer needs a dozen tokens, a proof
hundreds). The recipe maps a task-type column to budgets; the trainer samples up to
``max_completion_length`` and cuts each response at its own row's budget, so the policy is trained on
exactly what it would be allowed to emit. Responses that did not finish within budget are flagged;
the ``budget_exceeded`` reward (rewards/budget.py) turns the flag into the configured penalty.
"""

from __future__ import annotations

from collections.abc import Sequence

from k2rl.config import BudgetConfig
from k2rl.errors import K2RLError

# The column the trainer adds to every row for the rewards: True where the response was over budget.
EXCEEDED_COLUMN = "budget_exceeded"


def check_budget_config(config: BudgetConfig, max_completion_length: int) -> None:
    """Budgets must be positive and fit in what the sampler generates; fail before any model loads."""
    if config.column is None:
        return
    limits = dict(config.budgets)
    if config.default is not None:
        limits["(default)"] = config.default
    if not limits:
        raise K2RLError("trainer.budget.column is set but neither trainer.budget.budgets nor .default is")
    for task, budget in limits.items():
        if budget <= 0 or budget > max_completion_length:
            raise K2RLError(
                f"trainer.budget for {task!r} is {budget}; it must be between 1 and "
                f"trainer.max_completion_length ({max_completion_length})"
            )
    if config.penalty < 0:
        raise K2RLError(f"trainer.budget.penalty must be >= 0 (it is subtracted), got {config.penalty}")


def row_budgets(rows: Sequence[dict], config: BudgetConfig) -> list[int | None]:
    """The token budget of each row, from its task-type column (None: unlimited)."""
    budgets = []
    for row in rows:
        if config.column not in row:
            raise K2RLError(f"trainer.budget.column {config.column!r} is not a column of the training data")
        budgets.append(config.budgets.get(str(row[config.column]), config.default))
    return budgets


def cut_to_budgets(
    completion_ids: list[list[int]],
    logprobs: list[list[float]] | None,
    budgets: Sequence[int | None],
    stop_ids: Sequence[int],
) -> tuple[list[list[int]], list[list[float]] | None, list[bool]]:
    """Cut each response to its budget; flag those that did not end (with a stop token) within it.

    A response of exactly ``budget`` tokens whose last token is a stop token finished in time; one
    that filled its budget without stopping, or ran past it, exceeded it.
    """
    stop = set(stop_ids)
    cut_ids, cut_logprobs, exceeded = [], [] if logprobs is not None else None, []
    for i, (ids, budget) in enumerate(zip(completion_ids, budgets, strict=True)):
        over = budget is not None and (len(ids) > budget or (len(ids) == budget and ids[-1] not in stop))
        keep = len(ids) if budget is None else min(len(ids), budget)
        cut_ids.append(list(ids[:keep]))
        if logprobs is not None:
            cut_logprobs.append(list(logprobs[i][:keep]))
        exceeded.append(over)
    return cut_ids, cut_logprobs, exceeded
