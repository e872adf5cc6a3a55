"""verifiers (``verifiers.v1``) tasksets as k2rl data, their ``@vf.reward`` methods as k2rl rewards.

``data.source: verifiers`` with ``data.options.taskset: module:NAME`` (a ``vf.Taskset`` instance, a
``Taskset`` subclass built with its default config, or a function returning a taskset) turns each
task into a row: ``question`` (the task's prompt), ``answer`` (the task data's ``answer`` field when
it has one, else empty), ``vf_task`` (the task's key) and ``vf_taskset`` (the spec). The reward ``verifiers`` with
``options.reward: NAME`` scores a completion the way verifiers itself does: it rebuilds the trace
(the task's prompt, then the completion's messages, tool calls and tool results included) and runs
the task's own ``score``, so every ``@vf.reward`` (and plugged reward) of the task is computed by
verifiers' code, with the task's data; ``NAME`` picks one of them. No server or model client is
involved, so this serves single-turn tasks, and multi-turn ones whose tools k2rl's rollout engine
provides (``rollout.tools`` / ``rollout.environment``).

``data.options.env`` (a verifiers env config) instead of ``taskset`` runs each rollout as an episode
of that verifiers ``Env``, its harness talking to the policy through k2rl's OpenAI-compatible
endpoint (:mod:`k2rl.rollouts.verifiers_env`); the rows are its taskset's tasks.

The optional extra ``k2rl[verifiers]`` installs verifiers.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import random
import threading

from datasets import Dataset

from k2rl.errors import K2RLError

TASK_COLUMN = "vf_task"
TASKSET_COLUMN = "vf_taskset"
ENV_COLUMN = "vf_env"  # a row's verifiers env config (JSON): its rollouts and held-out answers are episodes
SCORES_COLUMN = "vf_scores"  # an episode's recorded scores (JSON), written by k2rl.rollouts.verifiers_env
_TASKSETS: dict[str, dict] = {}  # taskset spec -> {task key -> task}, built once per process
_ENVS: dict[str, object] = {}  # env config (JSON) -> verifiers Env, built once per process
_LOCK = threading.Lock()


def _vf():
    try:
        import verifiers.v1 as vf
    except ImportError as exc:
        raise K2RLError("data.source: verifiers needs the verifiers package: pip install 'k2rl[verifiers]'") from exc
    return vf


def load_taskset(spec: str):
    """The taskset ``module:NAME`` names (an instance, a Taskset subclass, or a function returning one)."""
    vf = _vf()
    if not isinstance(spec, str) or ":" not in spec:
        raise K2RLError(f"data.options.taskset must be module:NAME, got {spec!r}")
    module_name, _, attribute = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise K2RLError(f"data.options.taskset: cannot import {spec!r} ({type(exc).__name__}: {exc})") from exc
    if isinstance(found, type) and issubclass(found, vf.Taskset):
        from verifiers.v1.utils.generic import concrete_type

        found = found((concrete_type(found, vf.TasksetConfig) or vf.TasksetConfig)())
    elif callable(found) and not isinstance(found, vf.Taskset):
        try:
            found = found()
        except Exception as exc:  # noqa: BLE001 - the user's factory: one line naming it
            raise K2RLError(f"data.options.taskset: calling {spec!r} failed: {_first_line(exc)}") from exc
    if not isinstance(found, vf.Taskset):
        raise K2RLError(f"data.options.taskset: {spec!r} is not a verifiers.v1 Taskset (got {type(found).__name__})")
    if not found.bounded:
        raise K2RLError(f"data.options.taskset: {spec!r} is infinite; bound it (e.g. return taskset.take(N))")
    return found


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def env_key(config: dict) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def load_env(config: dict):
    """The verifiers ``Env`` that ``config`` (``data.options.env``) describes, built once per process."""
    try:
        from verifiers.v1.utils.loaders import load_environment, resolve_env_config
    except ImportError as exc:
        raise K2RLError("data.options.env needs the verifiers package: pip install 'k2rl[verifiers]'") from exc
    if not isinstance(config, dict) or not isinstance(config.get("taskset"), dict) or not config["taskset"].get("id"):
        raise K2RLError("data.options.env must be a verifiers env config with taskset.id "
                        "(e.g. {taskset: {id: my_taskset}, agent: {runtime: {type: subprocess}}})")
    key = env_key(config)
    with _LOCK:
        if key not in _ENVS:
            try:
                env = load_environment(resolve_env_config(dict(config)))
            except Exception as exc:  # noqa: BLE001 - the user's env config or plugin: one line naming it
                raise K2RLError(f"data.options.env: verifiers cannot build this env: {_first_line(exc)}") from exc
            if not env.taskset.bounded:
                raise K2RLError("data.options.env: the taskset is infinite; bound it")
            _ENVS[key] = env
        return _ENVS[key]


def tasks_by_key(spec: str) -> dict:
    """``{task key -> task}`` of the taskset ``spec``, loaded once per process."""
    with _LOCK:
        if spec not in _TASKSETS:
            _TASKSETS[spec] = {task.key: task for task in load_taskset(spec)}
        return _TASKSETS[spec]


def _question(task) -> str:
    data = task.data
    if data.system_prompt:
        raise K2RLError(f"verifiers task {task.key[:12]}: a task system prompt is not supported; "
                        "set data.system_prompt in the recipe instead")
    if isinstance(data.prompt, str):
        return data.prompt
    messages = data.prompt or []
    if len(messages) == 1 and messages[0].role == "user":
        return data.prompt_text
    raise K2RLError(f"verifiers task {task.key[:12]}: only a single user prompt is supported "
                    f"(got {len(messages)} message(s))")


def verifiers_splits(train_size: int, eval_size: int, seed: int, taskset: str | None = None,
                     env: dict | None = None) -> tuple[Dataset, Dataset]:
    """(training rows, held-out rows): the taskset's tasks in a seeded order, the first ``eval_size`` held out.

    ``env`` (a verifiers env config) instead of ``taskset``: the env's own taskset, and the rollouts run
    through the env (:mod:`k2rl.rollouts.verifiers_env`).
    """
    if (taskset is None) == (env is None):
        raise K2RLError("data.source: verifiers needs one of data.options.taskset: module:NAME (single-turn) "
                        "or data.options.env: a verifiers env config (multi-turn)")
    if env is not None:
        found = load_env(env).taskset
        taskset = f"{type(found).__module__}:{type(found).__name__}"  # held-out scoring rebuilds it by name
        with _LOCK:
            _TASKSETS.setdefault(taskset, {task.key: task for task in found})
    tasks = list(tasks_by_key(taskset).values())
    if any(getattr(t, "NEEDS_CONTAINER", False) for t in tasks):
        raise K2RLError(f"data.options.taskset: {taskset!r} has tasks that need a container runtime; "
                        "k2rl scores tasks without one")
    if len(tasks) < 2:
        raise K2RLError(f"data.options.taskset: {taskset!r} has {len(tasks)} task(s); at least 2 (train and held out)")
    random.Random(f"verifiers-{seed}").shuffle(tasks)
    held = min(eval_size, len(tasks) // 2)
    rows = [{"question": _question(t), "answer": str(getattr(t.data, "answer", "") or ""), TASK_COLUMN: t.key,
             TASKSET_COLUMN: taskset} for t in tasks]
    if env is not None:
        for row in rows:
            row[ENV_COLUMN] = env_key(env)
    return Dataset.from_list(rows[held:held + train_size]), Dataset.from_list(rows[:held])


def _message(message: dict):
    from verifiers.v1.types import AssistantMessage, SystemMessage, ToolCall, ToolMessage, UserMessage

    role, content = message.get("role"), message.get("content")
    if role == "assistant":
        calls = [ToolCall(id=c.get("id") or "", name=c["function"]["name"] or "",
                          arguments=(c["function"]["arguments"] if isinstance(c["function"]["arguments"], str)
                                     else json.dumps(c["function"]["arguments"])))
                 for c in message.get("tool_calls") or []]
        return AssistantMessage(content=content, tool_calls=calls or None)
    if role == "tool":
        return ToolMessage(tool_call_id=message.get("tool_call_id") or "", content=content or "")
    return (SystemMessage if role == "system" else UserMessage)(content=content or "")


def trace_for(task, completion):
    """The verifiers trace of ``task`` answered by ``completion`` (a string or k2rl's chat messages)."""
    from verifiers.v1.configs.agent import AgentConfig
    from verifiers.v1.graph import MessageNode
    from verifiers.v1.trace import AgentInfo, Trace, TraceTask
    from verifiers.v1.types import UserMessage

    trace = Trace(task=TraceTask(type=type(task).__name__, data=task.data, key=task.key, hash=task.hash),
                  agent=AgentInfo(config=AgentConfig()))
    messages = [{"role": "assistant", "content": completion}] if isinstance(completion, str) else list(completion)
    nodes = [MessageNode(message=UserMessage(content=task.data.prompt_text))]
    for message in messages:
        nodes.append(MessageNode(parent=len(nodes) - 1, message=_message(message),
                                 sampled=message.get("role") == "assistant"))
    trace.nodes = nodes
    trace.is_completed = trace.ok = True
    return trace


def score(task, completion) -> dict[str, float | None]:
    """``{reward name -> score}``: what the task's own ``score`` records for ``completion``."""
    trace = trace_for(task, completion)
    asyncio.run(task.score(trace))
    return {name: None if reward is None else reward.score for name, reward in trace.rewards.items()}
