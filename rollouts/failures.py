"""The one exception that separates the infrastructure's failures from the policy's.

Its own module so tools (:mod:`k2rl.rollouts.tools`) and environments
(:mod:`k2rl.rollouts.environment`) can both raise it without importing each other.
"""


class InfrastructureError(Exception):
    """A tool or environment could not do its job for reasons that are not the policy's (``sandbox_error``).

    The rollout it hits gets no reward (``None`` for every reward of the row) and no loss, and is counted.
    """
