"""Partial rollouts (Kimi k1.5): a trajectory longer than the per-iteration token budget is paused and
continued in the next iteration, neither discarded nor truncated.

GRPO compares a prompt's completions with each other, so the unit that waits is the *group*: a
group is scored only when all of its members have finished, and until then its members keep their
place here. Every iteration the trainer hands the engine a fixed number of group slots; carried
groups take their slots first, and new prompts fill the rest. A new prompt that finds no free slot
is skipped (counted, not queued: the sampler will offer prompts again, and an unbounded queue would
only grow while long trajectories are in flight).

Tokens sampled in an earlier iteration came from weights that have since changed; they stay in the
context but are masked out of the loss (see :mod:`k2rl.rollouts.trajectory`). Their rollout's
reward still reaches the tokens sampled in the iteration that finishes it.
"""

from __future__ import annotations

from k2rl.rollouts.trajectory import DONE, PAUSED, RUNNING, Trajectory

Group = list[Trajectory]


class PartialRollouts:
    """The groups paused at the end of one iteration, waiting to continue in the next."""

    def __init__(self) -> None:
        self.carried: list[Group] = []
        self.skipped_groups = 0

    def admit(self, new_groups: list[Group], slots: int) -> list[Group]:
        """The groups to work on this iteration: carried ones first, then new ones up to ``slots``."""
        carried, self.carried = self.carried, []
        for group in carried:
            for trajectory in group:
                trajectory.iteration_tokens = 0
                if trajectory.status == PAUSED:
                    trajectory.status = RUNNING
        free = max(slots - len(carried), 0)
        self.skipped_groups += max(len(new_groups) - free, 0)
        return carried + new_groups[:free]

    def carry(self, groups: list[Group]) -> None:
        """Keep the groups that have an unfinished member for the next iteration."""
        self.carried = [g for g in groups if not is_complete(g)]


def is_complete(group: Group) -> bool:
    return all(t.status == DONE for t in group)
