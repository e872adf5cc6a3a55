"""One rollout in progress: the tokens so far, who wrote each one, and why it stopped.

The loss mask is the point of this record. A completion interleaves three kinds of tokens: the
policy's own samples, text the environment inserted (tool answers and the chat markers around
them), and -- with partial rollouts -- policy samples drawn in an *earlier* iteration, from weights
that have since changed. Only the first kind, drawn from the current weights, is trained;
``sampled_in`` records per token the iteration that sampled it (``-1`` for environment text) so the
mask is derived, never tracked by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RUNNING, PAUSED, DONE = "running", "paused", "done"
ENVIRONMENT = -1


@dataclass
class Trajectory:
    row: dict  # the dataset row (prompt and the columns rewards read)
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    sampled_in: list[int] = field(default_factory=list)  # iteration that sampled each token, ENVIRONMENT for inserted text
    messages: list[dict] = field(default_factory=list)  # finished turns, as chat messages
    turn_start: int = 0  # index in completion_ids where the current assistant turn began
    turns: int = 0
    tool_calls: int = 0
    iteration_tokens: int = 0  # policy tokens sampled in the current iteration
    status: str = RUNNING
    stop_reason: str | None = None  # answer | max_turns | max_tool_calls | token_budget | infrastructure_error
    rewards: list[float | None] | None = None
    reward_failures: list[bool] | None = None  # per reward: it raised or timed out on this row
    budget: int = 256  # completion tokens this trajectory may use (its row's budget)
    per_task_budget: bool = False  # the budget came from the row's task type (trainer.budget)
    extra_columns: dict = field(default_factory=dict)  # what the rewards logged for it through log_extra
    state: object = None  # the environment's state for this rollout (Environment.setup)
    failure: str | None = None  # why the infrastructure failed it: no reward, no loss

    def over_budget(self) -> bool | None:
        """Cut at a per-task budget (priced by the budget_exceeded reward); None while paused."""
        if self.status != DONE:
            return None
        return self.per_task_budget and self.stop_reason == "token_budget"

    def context(self) -> list[int]:
        return self.prompt_ids + self.completion_ids

    def add_policy_tokens(self, ids: list[int], logprobs: list[float], iteration: int) -> None:
        self.completion_ids += ids
        self.logprobs += logprobs
        self.sampled_in += [iteration] * len(ids)
        self.iteration_tokens += len(ids)

    def add_environment_tokens(self, ids: list[int]) -> None:
        self.completion_ids += ids
        self.logprobs += [0.0] * len(ids)
        self.sampled_in += [ENVIRONMENT] * len(ids)
        self.turn_start = len(self.completion_ids)

    def finish(self, reason: str) -> None:
        self.status, self.stop_reason = DONE, reason

    def fail(self, why: str) -> None:
        """The infrastructure (a tool's sandbox, the environment) failed this rollout: it ends unscored and untrained."""
        self.failure = why
        self.status, self.stop_reason = DONE, "infrastructure_error"

    def loss_mask(self, iteration: int) -> list[int]:
        """1 for tokens the policy sampled in ``iteration`` (trained), 0 for everything else (all of a failed rollout)."""
        return [int(s == iteration and self.failure is None) for s in self.sampled_in]

    def truncate(self, length: int) -> None:
        del self.completion_ids[length:], self.logprobs[length:], self.sampled_in[length:]
