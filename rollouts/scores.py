"""How the rollout engine hands its scores to TRL: one column per reward with the scores, and one with
the rows that reward failed on, read back by stand-in reward functions on TRL's side.

The stand-ins expose ``failed_rows()`` like an isolated reward (:mod:`k2rl.rewards.isolation`), so the
trainer's one rule for rows with no reward (:mod:`k2rl.trainer._trl`) counts ``rewards/<name>/failures``
whether a reward ran inside the engine or in TRL's own scoring.
"""

from __future__ import annotations

REWARD_COLUMN = "k2rl_reward_{}"
FAILED_COLUMN = "k2rl_reward_failed_{}"


def precomputed_rewards(reward_funcs) -> list:
    """TRL-side stand-ins for rewards the engine already computed: same names, scores read from the row."""

    def reader(index: int, name: str):
        scores, failures = REWARD_COLUMN.format(index), FAILED_COLUMN.format(index)
        failed: list[int] = []

        def reward(prompts, completions, **kwargs):
            failed[:] = [row for row, flag in enumerate(kwargs.get(failures) or ()) if flag]
            return kwargs[scores]

        reward.__name__ = name
        reward.failed_rows = lambda: list(failed)
        return reward

    return [reader(i, getattr(f, "__name__", f"reward_{i}")) for i, f in enumerate(reward_funcs)]
