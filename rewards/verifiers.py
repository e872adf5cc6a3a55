"""The ``verifiers`` reward: one ``@vf.reward`` of a verifiers task, computed by verifiers itself.

Rows come from ``data.source: verifiers`` (:mod:`k2rl.data.verifiers_tasks`), which records each
row's task (``vf_task``) and taskset (``vf_taskset``). ``options.reward`` names the task reward to
return; give each a ``label`` in the recipe to log them apart. A reward the task does not record is
an error naming those it does.

Rows rolled out through a verifiers env (``data.options.env``) carry the episode's own scores
(``vf_scores``, what the task's rewards recorded on the episode's trace); the reward returns those,
and ``None`` for an episode that failed.
"""

from __future__ import annotations

from k2rl.errors import K2RLError
from k2rl.rewards.answer import dataset_column
from k2rl.rewards.registry import register_reward


@register_reward("verifiers")
def verifiers_reward(prompts, completions, reward: str | None = None, **kwargs) -> list[float | None]:
    """The task's own score named ``reward`` for each completion (None where verifiers recorded none)."""
    from k2rl.data.verifiers_tasks import SCORES_COLUMN, TASK_COLUMN, TASKSET_COLUMN, score, tasks_by_key

    if not reward:
        raise K2RLError("reward 'verifiers' needs options.reward: the name of the task's @vf.reward method")
    if kwargs.get(SCORES_COLUMN) is not None:  # episodes of a verifiers env: the trace's own scores
        return [_recorded(scores, reward) for scores in kwargs[SCORES_COLUMN]]
    keys = dataset_column(kwargs, TASK_COLUMN, "verifiers")
    specs = dataset_column(kwargs, TASKSET_COLUMN, "verifiers")
    out = []
    for completion, key, spec in zip(completions, keys, specs, strict=True):
        scores = score(tasks_by_key(spec)[key], completion)
        if reward not in scores:
            raise K2RLError(f"reward 'verifiers': the task records no reward {reward!r} (it records {sorted(scores)})")
        out.append(scores[reward])
    return out


def _recorded(scores: str | None, reward: str) -> float | None:
    """The score named ``reward`` in an episode's recorded scores (None: the episode failed, no reward)."""
    import json

    if scores is None:
        return None
    recorded = json.loads(scores)
    if reward not in recorded:
        raise K2RLError(f"reward 'verifiers': the task records no reward {reward!r} (it records {sorted(recorded)})")
    return recorded[reward]
