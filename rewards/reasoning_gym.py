"""The ``reasoning_gym`` reward: each reasoning-gym task's own ``score_answer`` on the completion's answer.

Rows come from ``data.source: reasoning_gym`` (:mod:`k2rl.data.reasoning_gym`), which keeps the task
name (``task``) and the task's entry (``rg_entry``: its answer and metadata, JSON). The answer a
completion commits to is the text after its last "answer is" (the answer format the warm start
teaches), up to the end of the line, without a closing period; without that mark, the whole completion.
Scores are the task's own (reasoning-gym's verifiers give partial credit for some tasks).
"""

from __future__ import annotations

import functools
import json
import re

from k2rl.data.reasoning_gym import import_reasoning_gym
from k2rl.rewards.answer import completion_text, dataset_column
from k2rl.rewards.registry import register_reward

_MARK = re.compile(r"answer\s*(?:is|:)\s*", re.IGNORECASE)


def committed_answer(text: str) -> str:
    """The answer a response commits to, as reasoning-gym's scorers expect it (a bare string)."""
    marks = list(_MARK.finditer(text))
    answer = text[marks[-1].end():] if marks else text
    answer = answer.strip().splitlines()[0].strip() if answer.strip() else ""
    return answer[:-1].rstrip() if answer.endswith(".") else answer


@functools.cache
def _scorer(task: str):
    """The task's own ``score_answer`` (reasoning-gym builds a dataset object for it: once per task)."""
    return import_reasoning_gym("reward reasoning_gym").get_score_answer_fn(task)


@register_reward("reasoning_gym")
def reasoning_gym_reward(prompts, completions, **kwargs) -> list[float]:
    """Each row's task scores the completion's committed answer (0.0 to 1.0)."""
    tasks = dataset_column(kwargs, "task", "reasoning_gym")
    entries = dataset_column(kwargs, "rg_entry", "reasoning_gym")
    scores = []
    for completion, task, entry in zip(completions, tasks, entries, strict=True):
        score = _scorer(task)(committed_answer(completion_text(completion)), json.loads(entry))
        scores.append(float(score))
    return scores
