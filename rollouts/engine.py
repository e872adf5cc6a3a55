"""The rollout engine: multi-turn tool use, token budgets, partial rollouts and overlapped scoring,
plugged into TRL's ``GRPOTrainer`` as its ``rollout_func``.

One call (one generation batch of the trainer) goes like this:

1. the batch's rows become groups of trajectories (TRL repeats each prompt ``num_generations``
   times, consecutively); groups paused in the previous iteration take their slots first
   (:mod:`k2rl.rollouts.partial`);
2. the groups are split into ``chunks``; each chunk is advanced turn by turn -- the backend samples
   every running trajectory up to its end-of-turn token or its allowance, tool calls in finished
   turns run (concurrently) and their answers are appended as environment tokens -- until every
   trajectory has answered, hit a limit, or used up this iteration's budget;
3. each chunk's finished groups are scored by the recipe's reward functions, on a worker thread
   while the next chunk generates when ``overlap`` is on (:mod:`k2rl.rollouts.overlap`);
4. the rows go back to TRL with ``env_mask`` (1 only on tokens the policy sampled in this
   iteration), one precomputed column per reward (and one of the rows it failed on), which
   :func:`k2rl.rollouts.scores.precomputed_rewards` hands to
   TRL's own reward weighting, normalisation and logging, and the columns of the dataset row each
   trajectory started from (TRL writes them over its batch rows, so a carried group's row says which
   prompt it answers). Groups still paused go back with no reward at all, which TRL treats as
   unscorable: zero advantage, no loss.

The reward functions get the keywords TRL's own scoring passes (``trainer_state``, ``log_metric``,
``log_extra``: :meth:`k2rl.trainer._trl.TRLSeams.reward_kwargs`), so a reward's warm-up and its metrics
behave the same with or without the engine; ``log_extra`` columns are kept per trajectory and handed
on in the order of the returned rows.

What each row may call, its limits and its own reward come from its
:class:`~k2rl.rollouts.environment.Environment` (``setup`` when the trajectory starts, ``teardown``
once it is scored). A row whose tool or environment failed for infrastructure reasons
(:class:`~k2rl.rollouts.environment.InfrastructureError`, e.g. ``sandbox_error``) stops there and goes
back with ``None`` for every reward and an all-zero ``env_mask``: no reward, no loss, counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from trl.models import unwrap_model_for_generation

from k2rl.config import BudgetConfig
from k2rl.errors import K2RLError
from k2rl.rollouts.budget import EXCEEDED_COLUMN, row_budgets
from k2rl.rollouts.environment import Environment, InfrastructureError, ToolsEnvironment
from k2rl.rollouts.backends import Sampling, TransformersBackend
from k2rl.rollouts.overlap import ScoringPipeline
from k2rl.rollouts.partial import Group, PartialRollouts, is_complete
from k2rl.rollouts.scores import FAILED_COLUMN, REWARD_COLUMN
from k2rl.rollouts.tool_calls import parse_turn, tool_results_text
from k2rl.rollouts.tools import execute
from k2rl.rollouts.trajectory import PAUSED, RUNNING, Trajectory

ENVIRONMENT_REWARD_COLUMN = "environment_reward"  # what the ``environment`` reward reads

OUTPUT_COLUMNS = frozenset({"prompt_ids", "completion_ids", "logprobs", "env_mask", "stop_reason"})


def prompt_token_ids(tokenizer, prompt) -> list[int]:
    """A prompt (text, or chat messages through the chat template) as token ids."""
    if isinstance(prompt, str):
        return list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@dataclass(frozen=True)
class Limits:
    """When a trajectory stops (``max_turns``, ``max_tool_calls``, ``token_budget``) or pauses (``iteration_budget``)."""

    max_turns: int = 1
    max_tool_calls: int = 8
    token_budget: int = 256  # completion tokens in all, policy and environment
    iteration_budget: int | None = None  # policy tokens per trajectory per iteration; None: no partial rollouts
    budget: BudgetConfig | None = None  # per-task budgets (trainer.budget): a row's cap is the smaller one

    def row_budget(self, row: dict) -> tuple[int, bool]:
        """(completion tokens this row may use, whether a per-task budget set it)."""
        per_task = row_budgets([row], self.budget)[0] if self.budget is not None and self.budget.column else None
        if per_task is None or per_task >= self.token_budget:
            return self.token_budget, per_task is not None
        return per_task, True

    def __post_init__(self):
        for name in ("max_turns", "token_budget"):
            if getattr(self, name) < 1:
                raise K2RLError(f"rollout.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_tool_calls < 0:
            raise K2RLError(f"rollout.max_tool_calls must be >= 0, got {self.max_tool_calls}")
        if self.iteration_budget is not None and self.iteration_budget < 1:
            raise K2RLError(f"rollout.iteration_budget must be at least 1, got {self.iteration_budget}")


@dataclass
class RolloutStats:
    generate_s: float = 0.0
    score_s: float = 0.0
    score_wait_s: float = 0.0  # how long generation waited on scoring: all of score_s unless it overlapped
    wall_s: float = 0.0
    tool_calls: int = 0
    paused_groups: int = 0
    skipped_groups: int = 0
    infrastructure_failures: int = 0  # rows with no reward and no loss: a tool or the environment failed


class RolloutEngine:
    """Rollouts for a batch of dataset rows; also callable as TRL's ``rollout_func(prompts, trainer)``."""

    def __init__(self, tokenizer, *, tools: dict | None = None, limits: Limits = Limits(), reward_funcs=(),
                 backend=None, overlap: bool = False, chunks: int = 1, queue_size: int = 2,
                 tool_workers: int = 4, environment: Environment | None = None):
        if chunks < 1:
            raise K2RLError(f"rollout.chunks must be at least 1, got {chunks}")
        if environment is not None and tools:
            raise K2RLError("rollout.tools and rollout.environment: an environment names its own tools; give one")
        self.environment = environment if environment is not None else ToolsEnvironment(tools)
        self.tokenizer, self.limits = tokenizer, limits
        self.reward_funcs, self.backend = list(reward_funcs), backend
        self.overlap, self.chunks, self.queue_size, self.tool_workers = overlap, chunks, queue_size, tool_workers
        self.partial = PartialRollouts()
        self.reward_kwargs: dict = {}  # the trainer's keywords for reward functions (set per call)
        self.iteration = 0
        self.last_stats = RolloutStats()

    # ------------------------------------------------------------------ TRL's rollout_func
    def __call__(self, prompts: list, trainer) -> dict:
        training = trainer.model.training
        # TRL hands rollout_func only the prompts; k2rl's trainer exposes the batch rows for the rewards.
        rows = (trainer.batch_rows() if hasattr(trainer, "batch_rows") else None) or [{"prompt": p} for p in prompts]
        if len(rows) != len(prompts):
            raise RuntimeError("rollout rows and prompts disagree; the trainer must record its batch rows")
        args = trainer.args
        sampling = Sampling(args.temperature, args.top_p, args.top_k)
        group = trainer.num_generations if training else trainer.num_generations_eval
        self.reward_kwargs = trainer.reward_kwargs() if hasattr(trainer, "reward_kwargs") else {}
        if self.backend is not None and not isinstance(self.backend, TransformersBackend):
            output = self.run(rows, group, sampling, carry=training)
        else:  # TRL's own unwrapping: no gradient checkpointing (so a KV cache) while generating
            with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                             gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs) as model:
                self.backend = TransformersBackend(model, trainer.processing_class)
                output = self.run(rows, group, sampling, carry=training)
        stats = self.last_stats
        if hasattr(trainer, "record_metric"):
            for key in ("generate_s", "score_s", "score_wait_s", "wall_s", "tool_calls", "paused_groups",
                        "skipped_groups", "infrastructure_failures"):
                trainer.record_metric(f"rollouts/{key}", float(getattr(stats, key)))
        if hasattr(trainer, "scored_during_generation"):  # the step's cost: this scoring ran inside generation
            trainer.scored_during_generation(stats.score_s, stats.score_wait_s)
        return output

    # ------------------------------------------------------------------ the engine proper
    def run(self, rows: list[dict], group_size: int, sampling: Sampling = Sampling(), carry: bool = True) -> dict:
        """Rollouts for ``rows`` (``group_size`` consecutive rows per prompt); TRL's rollout output dict."""
        started = time.perf_counter()
        self.iteration += 1
        self._sampling = sampling
        if len(rows) % group_size:
            raise RuntimeError(f"{len(rows)} rows do not split into groups of {group_size}")
        new_groups = [[self._start(row) for row in rows[i:i + group_size]] for i in range(0, len(rows), group_size)]
        slots = len(new_groups)
        skipped_before = self.partial.skipped_groups
        groups = self.partial.admit(new_groups, slots) if carry else new_groups
        stats = RolloutStats(skipped_groups=self.partial.skipped_groups - skipped_before)

        size = -(-len(groups) // self.chunks)
        chunks = [groups[i:i + size] for i in range(0, len(groups), size)]
        with getattr(self.backend, "session", contextlib.nullcontext)():  # e.g. adapters merged once per run
            self._generate_and_score(chunks, stats)

        if carry:
            self.partial.carry(groups)
        stats.paused_groups = sum(not is_complete(g) for g in groups)
        stats.tool_calls = sum(t.tool_calls for g in groups for t in g)
        stats.infrastructure_failures = sum(t.failure is not None for g in groups for t in g)
        stats.wall_s = time.perf_counter() - started
        self.last_stats = stats
        trajectories = [t for g in groups for t in g]
        self._hand_on_extra_columns(trajectories)
        return self._output(trajectories)

    def complete(self, rows: list[dict], sampling: Sampling) -> list[list[dict]]:
        """One trajectory per row, unscored and carried nowhere: the messages each ends with.

        An evaluation's completions: the same turns, tools and limits as training's rollouts, so a
        policy that answers after running its code is judged on that answer.
        """
        self.iteration += 1
        self._sampling = sampling
        trajectories = [self._start(row) for row in rows]
        with getattr(self.backend, "session", contextlib.nullcontext)():
            self._advance(trajectories)  # no iteration budget here: every trajectory runs to its end
        self._settle(trajectories)
        self.last_environment_rewards = [t.row.get(ENVIRONMENT_REWARD_COLUMN) for t in trajectories]
        return [list(t.messages) for t in trajectories]

    def _generate_and_score(self, chunks: list[list[Group]], stats: RolloutStats) -> None:
        if self.overlap and len(chunks) > 1:
            with ScoringPipeline(self._score_groups, self.queue_size) as pipeline:
                for chunk in chunks:
                    stats.generate_s += self._timed(self._advance, [t for g in chunk for t in g])
                    pipeline.submit([g for g in chunk if is_complete(g)])
                draining = time.perf_counter()  # leaving the block waits for the last chunks' scores
            stats.score_s = pipeline.score_s
            stats.score_wait_s = pipeline.blocked_s + time.perf_counter() - draining
        else:
            for chunk in chunks:
                stats.generate_s += self._timed(self._advance, [t for g in chunk for t in g])
                stats.score_s += self._timed(self._score_groups, [g for g in chunk if is_complete(g)])
            stats.score_wait_s = stats.score_s

    @staticmethod
    def _timed(fn, arg) -> float:
        started = time.perf_counter()
        fn(arg)
        return time.perf_counter() - started

    def prompt_ids(self, prompt) -> list[int]:
        """A row's prompt (text, or chat messages) as the token ids a rollout starts from."""
        return prompt_token_ids(self.tokenizer, prompt)

    def _start(self, row: dict) -> Trajectory:
        ids = self.prompt_ids(row["prompt"])
        # A copy: TRL writes the returned columns back into its batch rows, and a paused row outlives its batch.
        row = {k: v for k, v in row.items() if k not in OUTPUT_COLUMNS and not k.startswith("k2rl_reward_")}
        budget, per_task = self.limits.row_budget(row)
        t = Trajectory(row=row, prompt_ids=list(ids), budget=budget, per_task_budget=per_task)
        try:
            t.state = self.environment.setup(row)
        except Exception as exc:  # noqa: BLE001 - the environment's failure, not the policy's: no reward
            t.fail(f"environment {self.environment.name} setup failed: {type(exc).__name__}: {exc}")
        return t

    def _limit(self, name: str) -> int:
        """The environment's own turn or call limit, else the recipe's."""
        own = getattr(self.environment, name)
        return getattr(self.limits, name) if own is None else own

    def _allowance(self, t: Trajectory) -> int:
        left = t.budget - len(t.completion_ids)
        if self.limits.iteration_budget is not None:
            left = min(left, self.limits.iteration_budget - t.iteration_tokens)
        return left

    def _advance(self, trajectories: list[Trajectory]) -> None:
        """Run every trajectory until it finishes, or pauses at this iteration's budget."""
        sampling = self._sampling
        while True:
            for t in trajectories:
                if t.status == RUNNING and self._allowance(t) <= 0:
                    self._out_of_tokens(t)
            running = [t for t in trajectories if t.status == RUNNING]
            if not running:
                return
            outputs = self.backend.generate([t.context() for t in running], [self._allowance(t) for t in running], sampling)
            calls = []
            for t, (ids, logprobs) in zip(running, outputs, strict=True):
                t.add_policy_tokens(ids, logprobs, self.iteration)
                if ids and ids[-1] == self.tokenizer.eos_token_id:
                    calls += self._end_turn(t)
                elif self._allowance(t) <= 0:
                    self._out_of_tokens(t)
            self._run_tools(calls)

    def _out_of_tokens(self, t: Trajectory) -> None:
        if len(t.completion_ids) >= t.budget:
            self._close_open_turn(t)
            t.finish("token_budget")
        else:
            t.status = PAUSED

    def _close_open_turn(self, t: Trajectory) -> None:
        if t.turn_start < len(t.completion_ids):
            text = self.tokenizer.decode(t.completion_ids[t.turn_start:], skip_special_tokens=True)
            t.messages.append({"role": "assistant", "content": text})

    def _end_turn(self, t: Trajectory) -> list:
        """Record a finished assistant turn; the tool calls to run for it (``[(trajectory, call)]``)."""
        text = self.tokenizer.decode(t.completion_ids[t.turn_start:], skip_special_tokens=False)
        turn = parse_turn(text)
        t.messages.append(turn.as_message())
        t.turns += 1
        if not turn.calls:
            t.finish("answer")
            return []
        if t.turns >= self._limit("max_turns"):
            t.finish("max_turns")  # no turn left to read the answer in
            return []
        if t.tool_calls >= self._limit("max_tool_calls"):
            t.finish("max_tool_calls")
            return []
        allowed = self._limit("max_tool_calls") - t.tool_calls
        t.tool_calls += min(allowed, len(turn.calls))
        return [(t, call, index < allowed) for index, call in enumerate(turn.calls)]

    def _run_tools(self, calls: list) -> None:
        if not calls:
            return
        with ThreadPoolExecutor(min(self.tool_workers, len(calls))) as pool:
            answers = list(pool.map(lambda item: self._answer(*item), calls))
        by_trajectory: dict[int, tuple[Trajectory, list]] = {}
        for (t, call, _), answer in zip(calls, answers, strict=True):
            by_trajectory.setdefault(id(t), (t, []))[1].append((call.id, answer))
        for t, results in by_trajectory.values():
            failed = [a for _, a in results if isinstance(a, InfrastructureError)]
            if failed:  # what the tool would have said is unknown: the rollout ends here, unscored
                t.fail(f"tool infrastructure failed: {failed[0]}")
                continue
            for call_id, content in results:
                t.messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
            ids = self.tokenizer(tool_results_text(self.tokenizer, results), add_special_tokens=False)["input_ids"]
            t.add_environment_tokens(ids)
            if len(t.completion_ids) >= t.budget:
                t.truncate(t.budget)
                t.finish("token_budget")

    def _answer(self, t: Trajectory, call, allowed: bool) -> str | InfrastructureError:
        if not allowed:
            return f"error: tool-call limit reached ({self._limit('max_tool_calls')} per rollout)"
        try:
            return execute(call, self.environment.tools(t.state))
        except InfrastructureError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - the environment could not hand out its tools
            return InfrastructureError(f"environment {self.environment.name} tools failed: {type(exc).__name__}: {exc}")

    def _settle(self, trajectories: list[Trajectory]) -> None:
        """The environment's own reward into each row (``environment_reward``), then its teardown.

        An environment whose reward raises failed that rollout: it gets no reward at all. A teardown
        that raises costs nothing but is counted as a failure of that rollout too, since the
        environment's state for it may be wrong.
        """
        env = self.environment
        for t in trajectories:
            if env.has_reward and t.failure is None:
                try:
                    score = env.reward(t.state, list(t.messages), t.row)
                    t.row[ENVIRONMENT_REWARD_COLUMN] = None if score is None else float(score)
                except Exception as exc:  # noqa: BLE001
                    t.fail(f"environment {env.name} reward failed: {type(exc).__name__}: {exc}")
            try:
                env.teardown(t.state)
            except Exception as exc:  # noqa: BLE001
                t.fail(f"environment {env.name} teardown failed: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ scoring and output
    def _score_groups(self, groups: list[Group]) -> None:
        trajectories = [t for g in groups for t in g]
        self._settle(trajectories)
        for t in trajectories:
            if t.failure is not None:  # no reward, never a fake 0
                t.rewards = [None] * len(self.reward_funcs)
        trajectories = [t for t in trajectories if t.failure is None]
        if not trajectories:
            return
        if not self.reward_funcs:
            for t in trajectories:
                t.rewards = []
            return
        prompts = [t.row["prompt"] for t in trajectories]
        completions = [self._completion(t) for t in trajectories]
        columns = {k: [t.row.get(k) for t in trajectories] for k in trajectories[0].row if k not in ("prompt", "completion")}
        trainer_kwargs = dict(self.reward_kwargs)
        if "log_extra" in trainer_kwargs:  # kept per trajectory: the rows go back in another order
            trainer_kwargs["log_extra"] = lambda column, values: [
                t.extra_columns.__setitem__(column, v) for t, v in zip(trajectories, values, strict=True)]
        per_func = []
        for func in self.reward_funcs:
            out = func(prompts=prompts, completions=completions, completion_ids=[t.completion_ids for t in trajectories],
                       **columns, **trainer_kwargs)
            if asyncio.iscoroutine(out):
                out = asyncio.run(out)
            per_func.append(list(out))
        # A row a reward failed on (raised, timed out) gets no reward at all, as on TRL's path (k2rl/trainer/_trl.py)
        failed = [set(func.failed_rows()) if callable(getattr(func, "failed_rows", None)) else set()
                  for func in self.reward_funcs]
        for i, t in enumerate(trajectories):
            t.reward_failures = [i in rows for rows in failed]
            t.rewards = [None] * len(per_func) if any(t.reward_failures) else [scores[i] for scores in per_func]

    def _hand_on_extra_columns(self, trajectories: list[Trajectory]) -> None:
        """The ``log_extra`` columns the rewards wrote, one value per returned row, to the trainer's own."""
        log_extra = self.reward_kwargs.get("log_extra")
        columns = sorted({c for t in trajectories for c in t.extra_columns})
        for column in columns if callable(log_extra) else ():
            log_extra(column, [t.extra_columns.pop(column, None) for t in trajectories])

    def _completion(self, t: Trajectory):
        if isinstance(t.row["prompt"], str):
            return self.tokenizer.decode(t.completion_ids, skip_special_tokens=True)
        return list(t.messages)

    def _output(self, trajectories: list[Trajectory]) -> dict:
        output = {
            "prompt_ids": [t.prompt_ids for t in trajectories],
            "completion_ids": [list(t.completion_ids) for t in trajectories],
            "logprobs": [list(t.logprobs) for t in trajectories],
            "env_mask": [t.loss_mask(self.iteration) for t in trajectories],
            "stop_reason": [t.stop_reason or "paused" for t in trajectories],
        }
        for key in dict.fromkeys(k for t in trajectories for k in t.row):
            output[key] = [t.row.get(key) for t in trajectories]  # each row's own columns, carried ones included
        for i in range(len(self.reward_funcs)):
            output[REWARD_COLUMN.format(i)] = [t.rewards[i] if t.rewards is not None else None for t in trajectories]
            output[FAILED_COLUMN.format(i)] = [bool(t.reward_failures and t.reward_failures[i]) for t in trajectories]
        if self.limits.budget is not None and self.limits.budget.column:  # read by the budget_exceeded reward
            output[EXCEEDED_COLUMN] = [t.over_budget() for t in trajectories]
        return output

