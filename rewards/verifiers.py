"""The ``verifiers`` reward: one ``@vf.reward`` of a verifiers task, computed by verifiers itself.

Rows come from ``data.source: verifiers`` (:mod:`k2rl.data.verifiers_tasks`), which records each
row's task (``vf_task``) and taskset (``vf_taskset``). ``options.reward`` names the task reward to
return; give each a ``label`` in the recipe to log them apart. A reward the task does not record is
an error naming those it does.
"""

from __future__ import annotations

from k2rl.errors import K2RLError
from k2rl.rewards.answer import dataset_column
from k2rl.rewards.registry import register_reward


@register_reward("verifiers")
def verifiers_reward(prompts, completions, reward: str | None = None, **kwargs) -> list[float | None]:
    """The task's own score named ``reward`` for each completion (None where verifiers recorded none)."""
    from k2rl.data.verifiers_tasks import TASK_COLUMN, TASKSET_COLUMN, score, tasks_by_key

    if not reward:
        raise K2RLError("reward 'verifiers' needs options.reward: the name of the task's @vf.reward method")
    keys = dataset_column(kwargs, TASK_COLUMN, "verifiers")
    specs = dataset_column(kwargs, TASKSET_COLUMN, "verifiers")
    out = []
    for completion, key, spec in zip(completions, keys, specs, strict=True):
        scores = score(tasks_by_key(spec)[key], completion)
        if reward not in scores:
            raise K2RLError(f"reward 'verifiers': the task records no reward {reward!r} (it records {sorted(scores)})")
        out.append(scores[reward])
    return out
