"""verifiers.v1 tasksets as k2rl data and rewards (tasksets written here, no hub): each k2rl reward equals
what verifiers computes alone for the same completion, and both a single-turn taskset with two rewards and
a multi-turn one with a tool train two RL steps through k2rl."""

import asyncio
import json

import pytest

vf = pytest.importorskip("verifiers.v1")

from verifiers.v1.configs.agent import AgentConfig  # noqa: E402
from verifiers.v1.graph import MessageNode  # noqa: E402
from verifiers.v1.trace import AgentInfo, Trace, TraceTask  # noqa: E402
from verifiers.v1.types import AssistantMessage, ToolCall, ToolMessage, UserMessage  # noqa: E402

from k2rl.cli import main  # noqa: E402
from k2rl.config import DataConfig  # noqa: E402
from k2rl.data.sources import load_task_data  # noqa: E402
from k2rl.errors import K2RLError  # noqa: E402
from k2rl.rewards import get_reward  # noqa: E402


class SumData(vf.TaskData):
    answer: str


class SumTask(vf.Task[SumData]):
    @vf.reward
    async def correct(self, task, trace) -> float:
        return float(trace.last_reply.rstrip(".").split()[-1:] == [task.answer])

    @vf.reward(weight=0.5)
    async def brief(self, trace) -> float:
        return 1.0 if len(trace.last_reply) <= 20 else 0.0


class SumTaskset(vf.Taskset[SumTask]):
    def load(self):
        for a in range(8):
            for b in range(8):
                yield SumTask(SumData(prompt=f"What is {a} + {b}?", answer=str(a + b)))


class ToolTask(vf.Task[SumData]):
    """Multi-turn: the answer must come after a tool result that printed it."""

    @vf.reward
    async def correct(self, task, trace) -> float:
        return float(task.answer in trace.last_reply)

    @vf.reward(weight=0.2)
    async def used_tool(self, trace) -> float:
        return float(any(str(m.content).strip() for m in trace.tool_messages))


def make_tool_taskset():
    class Products(vf.Taskset[ToolTask]):
        def load(self):
            for a in range(10, 18):
                for b in range(10, 14):
                    yield ToolTask(SumData(prompt=f"What is {a} * {b}?", answer=str(a * b)))

    return Products(vf.TasksetConfig())


def alone(task, messages) -> dict:
    """What verifiers records for ``task`` answered with ``messages`` (verifiers' own message types)."""
    trace = Trace(task=TraceTask(type=type(task).__name__, data=task.data, key=task.key, hash=task.hash),
                  agent=AgentInfo(config=AgentConfig()))
    trace.nodes = [MessageNode(message=UserMessage(content=task.data.prompt))]
    for m in messages:
        trace.nodes.append(MessageNode(parent=len(trace.nodes) - 1, message=m, sampled=m.role == "assistant"))
    asyncio.run(task.score(trace))
    return {name: r.score for name, r in trace.rewards.items()}


def _rows(spec):
    data = load_task_data(DataConfig(source="verifiers", eval_size=8, options={"taskset": spec}), seed=0)
    return data


def test_single_turn_rows_and_both_rewards_equal_verifiers_alone():
    data = _rows("test_verifiers:SumTaskset")
    assert len(data.eval) == 8 and len(data.train) == 56
    assert not set(data.train["vf_task"]) & set(data.eval["vf_task"])
    tasks = {t.key: t for t in SumTaskset(vf.TasksetConfig())}
    rows = list(data.train)[:6]
    completions = [[{"role": "assistant", "content": text}] for text in
                   (f"The answer is {rows[0]['answer']}.", "The answer is 99.",
                    f"Let me think about it for a long while: {rows[2]['answer']}", "", "7", rows[5]["answer"])]
    columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    for name in ("correct", "brief"):
        ours = get_reward("verifiers", reward=name)(prompts=[r["prompt"] for r in rows], completions=completions,
                                                   **columns)
        theirs = [alone(tasks[r["vf_task"]], [AssistantMessage(content=c[0]["content"])])[name]
                  for r, c in zip(rows, completions)]
        assert ours == theirs
    assert ours != [ours[0]] * len(ours)  # the completions differ in what they earn


def test_tool_turns_reach_verifiers_as_its_own_messages():
    data = _rows("test_verifiers:make_tool_taskset")
    row = data.train[0]
    task = {t.key: t for t in make_tool_taskset()}[row["vf_task"]]
    call = {"id": "functions.python:0", "type": "function",
            "function": {"name": "python", "arguments": {"code": "print(1)"}}}
    ours_messages = [{"role": "assistant", "content": "", "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": "functions.python:0", "content": f"{row['answer']}\n"},
                     {"role": "assistant", "content": f"The answer is {row['answer']}."}]
    theirs_messages = [AssistantMessage(content="", tool_calls=[ToolCall(id="functions.python:0", name="python",
                                                                        arguments=json.dumps({"code": "print(1)"}))]),
                       ToolMessage(tool_call_id="functions.python:0", content=f"{row['answer']}\n"),
                       AssistantMessage(content=f"The answer is {row['answer']}.")]
    theirs = alone(task, theirs_messages)
    assert theirs == {"correct": 1.0, "used_tool": 1.0}
    for name, value in theirs.items():
        ours = get_reward("verifiers", reward=name)(prompts=[row["prompt"]], completions=[ours_messages],
                                                   vf_task=[row["vf_task"]], vf_taskset=[row["vf_taskset"]])
        assert ours == [value]
    direct = alone(task, [AssistantMessage(content="The answer is 1.")])
    assert get_reward("verifiers", reward="used_tool")(
        prompts=[row["prompt"]], completions=[[{"role": "assistant", "content": "The answer is 1."}]],
        vf_task=[row["vf_task"]], vf_taskset=[row["vf_taskset"]]) == [direct["used_tool"]] == [0.0]


FAST = ["data.eval_size=8", "warm_start.max_steps=3", "trainer.max_steps=2", "trainer.per_device_train_batch_size=8",
        "trainer.num_generations=4", "trainer.eval_steps=0", "trainer.logging_steps=1", "eval.max_new_tokens=24"]


def _recipe(tmp_path, taskset, rewards, rollout=""):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
policy: {{preset: k2-tiny}}
data: {{source: verifiers, options: {{taskset: "{taskset}"}}}}
trainer: {{max_completion_length: 24, learning_rate: 1.0e-3}}
rewards:
{rewards}
{rollout}
""")
    return recipe


def _train(tmp_path, recipe, *extra):
    assert main(["train", str(recipe), f"output_dir={tmp_path}", "run_name=vf", *FAST, *extra]) == 0
    records = [json.loads(line) for line in (tmp_path / "vf" / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["phase"] == "rl" and "loss" in r]


def test_single_turn_taskset_with_two_rewards_trains_two_steps(tmp_path):
    recipe = _recipe(tmp_path, "test_verifiers:SumTaskset",
                     "  - {name: verifiers, label: correct, options: {reward: correct}}\n"
                     "  - {name: verifiers, label: brief, weight: 0.5, options: {reward: brief}}")
    rl = _train(tmp_path, recipe)
    assert len(rl) == 2
    assert all("rewards/correct/mean" in r and "rewards/brief/mean" in r for r in rl)


def test_multi_turn_taskset_with_a_tool_trains_two_steps(tmp_path):
    recipe = _recipe(tmp_path, "test_verifiers:make_tool_taskset",
                     "  - {name: verifiers, label: correct, options: {reward: correct}}\n"
                     "  - {name: verifiers, label: used_tool, weight: 0.2, options: {reward: used_tool}}",
                     "rollout: {tools: [python], max_turns: 2, max_tool_calls: 1, token_budget: 24}")
    rl = _train(tmp_path, recipe)
    assert len(rl) == 2
    assert all("rewards/used_tool/mean" in r and "rollouts/tool_calls" in r for r in rl)


def test_bad_tasksets_and_reward_names_are_one_line_errors():
    with pytest.raises(K2RLError, match="module:NAME"):
        _rows("SumTaskset")
    with pytest.raises(K2RLError, match="not a verifiers.v1 Taskset"):
        _rows("test_verifiers:FAST")
    with pytest.raises(K2RLError, match="calling 'test_verifiers:SumData' failed: ValidationError"):
        _rows("test_verifiers:SumData")
    with pytest.raises(K2RLError, match="needs one of data.options.taskset"):
        load_task_data(DataConfig(source="verifiers"), seed=0)
    row = _rows("test_verifiers:SumTaskset").train[0]
    with pytest.raises(K2RLError, match=r"records no reward 'nope' \(it records \['brief', 'correct'\]\)"):
        get_reward("verifiers", reward="nope")(prompts=[row["prompt"]], completions=["x"], vf_task=[row["vf_task"]],
                                               vf_taskset=[row["vf_taskset"]])


class BoxTask(SumTask):
    NEEDS_CONTAINER = True


class BoxTaskset(vf.Taskset[BoxTask]):
    def load(self):
        yield from (BoxTask(SumData(prompt=f"{i}?", answer=str(i))) for i in range(3))


def test_tasks_that_need_a_container_are_refused():
    with pytest.raises(K2RLError, match="need a container runtime"):
        _rows("test_verifiers:BoxTaskset")
