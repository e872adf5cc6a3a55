"""verifiers.v1 environments (an ``Env``: a taskset, a harness, tools) as k2rl's rollouts.

With ``data.source: verifiers`` and ``data.options.env`` (a verifiers env config: ``{taskset: {id: ...},
agent: {harness: {id: ...}, runtime: {type: subprocess}}}``), each training step's rows become
verifiers episodes: the Env runs its harness, which talks to the policy through k2rl's own
OpenAI-compatible endpoint (:class:`~k2rl.rollouts.chat_endpoint.ChatEndpoint`, on localhost for the
step, served by the policy with its current adapters), and the task's ``@vf.reward`` methods score
the episode's trace -- verifiers' own scoring, nothing recomputed. The scores go to the rows as the
``vf_scores`` column, which the ``verifiers`` reward hands on (:mod:`k2rl.rewards.verifiers`).

The trainer trains on what was sampled. The endpoint records each turn's prompt ids, sampled ids and
log-probabilities under the episode's session (its trace id); :func:`trajectory_from_turns` strings
them into one completion: every turn's prompt must extend the previous turn's context, and what it
adds (tool answers, chat markers) goes in as environment tokens, out of the loss.

An episode verifiers marks failed (an env, harness or tool error), one with more than one trace, or
one whose turns do not extend each other gets no reward and no loss (``None`` scores, an all-zero
``env_mask``), counted as ``rollouts/infrastructure_failures`` -- never a fake 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field

from k2rl.data.verifiers_tasks import ENV_COLUMN, SCORES_COLUMN, load_env
from k2rl.errors import K2RLError
from k2rl.rollouts.backends import Sampling, TransformersBackend
from k2rl.rollouts.chat_endpoint import ChatEndpoint, Turn

KEY_VARIABLE = "K2RL_CHAT_ENDPOINT_KEY"  # how verifiers' client reads the endpoint's key


class ContextBreak(Exception):
    """A turn's prompt does not extend the previous turn's context: the episode is not one sequence."""


@dataclass
class Assembled:
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)  # 1: sampled by the policy (trained)

    def add(self, ids: list[int], logprobs: list[float] | None) -> None:
        self.completion_ids += ids
        self.logprobs += logprobs if logprobs is not None else [0.0] * len(ids)
        self.mask += [int(logprobs is not None)] * len(ids)


def trajectory_from_turns(turns: list[Turn], budget: int) -> Assembled:
    """One sequence from a session's turns: the first prompt, then per turn its new context and its samples."""
    if not turns:
        raise ContextBreak("the episode made no model call")
    out = Assembled(list(turns[0].prompt_ids))
    context = list(turns[0].prompt_ids)
    for turn in turns:
        if turn.prompt_ids[:len(context)] != context:
            raise ContextBreak("a turn's prompt does not extend the previous context (the harness rewrote history)")
        out.add(turn.prompt_ids[len(context):], None)
        out.add(turn.completion_ids, turn.logprobs)
        context = turn.prompt_ids + turn.completion_ids
    del out.completion_ids[budget:], out.logprobs[budget:], out.mask[budget:]
    return out


class VerifiersRollouts:
    """TRL's ``rollout_func`` for a verifiers env: every row one episode, scored by verifiers."""

    def __init__(self, tokenizer, env_config: dict, budget: int, model_name: str = "k2rl-policy"):
        self.tokenizer, self.env_config, self.budget, self.model_name = tokenizer, env_config, budget, model_name
        self.env = load_env(env_config)
        self.tasks = {task.key: task for task in self.env.taskset}
        self.backend = None  # a VLLMBackend once rollout.backend: vllm attaches one; else the policy in-process
        self.last_stats: dict[str, float] = {}
        self.last_episodes: list = []

    def __call__(self, prompts: list, trainer) -> dict:
        from trl.models import unwrap_model_for_generation

        rows = (trainer.batch_rows() if hasattr(trainer, "batch_rows") else None) or []
        if len(rows) != len(prompts):
            raise RuntimeError("rollout rows and prompts disagree; the trainer must record its batch rows")
        args = trainer.args
        sampling = Sampling(args.temperature, args.top_p, args.top_k)
        if self.backend is not None:  # k2rl's vLLM engine (rollout.backend: vllm), pushed to by the trainer
            output = self.run(rows, self.backend.generate, sampling)
        else:
            with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                             gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs) as model:
                backend = TransformersBackend(model, trainer.processing_class)
                with backend.session():
                    output = self.run(rows, backend.generate, sampling)
        if hasattr(trainer, "record_metric"):
            for key, value in self.last_stats.items():
                trainer.record_metric(f"rollouts/{key}", float(value))
        return output

    def prompt_ids(self, prompt) -> list[int]:
        """A row's prompt as token ids (the vLLM check samples from these; :mod:`k2rl.rollouts.vllm_rollouts`)."""
        from k2rl.rollouts.engine import prompt_token_ids

        return prompt_token_ids(self.tokenizer, prompt)

    def run(self, rows: list[dict], generate, sampling: Sampling = Sampling()) -> dict:
        """One episode per row through the env, the policy served by ``generate``; TRL's rollout output dict."""
        started = time.perf_counter()
        missing = [r.get("vf_task") for r in rows if r.get("vf_task") not in self.tasks]
        if missing:
            raise K2RLError(f"verifiers env: row task {str(missing[0])[:12]!r} is not in the env's taskset")
        endpoint = ChatEndpoint(self.tokenizer, generate, sampling=sampling, budget=self.budget, model=self.model_name)
        self.last_failures: dict[int, str] = {}  # row index -> why its episode failed
        self.last_turns: list[int] = []
        try:
            base_url = endpoint.start()
            episodes = asyncio.run(self._episodes([self.tasks[r["vf_task"]] for r in rows], endpoint.api_key, base_url))
            self.last_episodes = episodes
            outcomes = [self._outcome(i, episode, endpoint) for i, episode in enumerate(episodes)]
        finally:
            endpoint.close()
        output: dict = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "env_mask": [], "stop_reason": []}
        scores = []
        for row, (assembled, score, reason) in zip(rows, outcomes, strict=True):
            output["prompt_ids"].append(assembled.prompt_ids)
            output["completion_ids"].append(assembled.completion_ids)
            output["logprobs"].append(assembled.logprobs)
            output["env_mask"].append(assembled.mask if score is not None else [0] * len(assembled.mask))
            output["stop_reason"].append(reason)
            scores.append(None if score is None else json.dumps(score))
        for key in dict.fromkeys(k for r in rows for k in r if k not in output and k != SCORES_COLUMN):
            output[key] = [r.get(key) for r in rows]
        output[SCORES_COLUMN] = scores
        self.last_stats = {"infrastructure_failures": sum(s is None for s in scores),
                           "model_turns": sum(self.last_turns) / max(1, len(self.last_turns)),
                           "wall_s": time.perf_counter() - started}
        return output

    async def _episodes(self, tasks: list, api_key: str, base_url: str) -> list:
        from verifiers.v1.clients import ModelContext
        from verifiers.v1.configs.client import EvalClientConfig

        os.environ[KEY_VARIABLE] = api_key  # verifiers' client reads its key from the environment only
        try:
            context = ModelContext(model=self.model_name,
                                   client=EvalClientConfig(base_url=base_url, api_key_var=KEY_VARIABLE))
            async with self.env.serving():
                return await asyncio.gather(*(self.env.run_slot(slot, context)
                                              for task in tasks for slot in self.env.slots(task, 1)))
        finally:
            os.environ.pop(KEY_VARIABLE, None)

    def _outcome(self, index: int, episode, endpoint: ChatEndpoint) -> tuple[Assembled, dict | None, str]:
        """(the episode's tokens, its scores or None when it failed, why it stopped)."""
        turns = [turn for trace in episode.traces for turn in endpoint.take(trace.id)]
        self.last_turns.append(len(turns))
        try:
            assembled = trajectory_from_turns(turns, self.budget)
        except ContextBreak as exc:
            self.last_failures[index] = str(exc)
            return Assembled(list(turns[0].prompt_ids) if turns else []), None, "infrastructure_error"
        if not episode.ok or episode.errors or len(episode.traces) != 1 or not episode.traces[0].ok:
            self.last_failures[index] = ("; ".join(f"{e.type}: {e.message}" for e in episode.errors)[:300]
                                         or "the episode did not finish, or is not single-agent")
            return assembled, None, "infrastructure_error"
        trace = episode.traces[0]
        return assembled, {name: r.score for name, r in trace.rewards.items()}, turns[-1].finish_reason


def _as_k2rl(message) -> dict:
    """A verifiers message as k2rl's chat message (tool-call arguments as objects)."""
    out = {"role": message.role, "content": message.content if isinstance(message.content, str) else
           ("" if message.content is None else str(message.content))}
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id
    calls = getattr(message, "tool_calls", None) or []
    if calls:
        out["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.name, "arguments": _loads(c.arguments)}} for c in calls]
    return out


def _loads(arguments: str):
    try:
        return json.loads(arguments)
    except (TypeError, ValueError):
        return arguments


def held_out_episodes(model, tokenizer, rows: list[dict], budget: int) -> tuple[list[list[dict]], list[str | None]]:
    """Greedy episodes of the rows' env: each row's messages after its prompt, and its recorded scores (JSON)."""
    rollouts = VerifiersRollouts(tokenizer, json.loads(rows[0][ENV_COLUMN]), budget)
    was_training = model.training
    model.eval()
    try:
        out = rollouts.run(rows, TransformersBackend(model, tokenizer).generate, Sampling(temperature=0.0))
    finally:
        if was_training:
            model.train()
    messages = [[_as_k2rl(node.message) for node in episode.traces[0].nodes[1:]] if len(episode.traces) == 1 else []
                for episode in rollouts.last_episodes]
    return messages, out[SCORES_COLUMN]
