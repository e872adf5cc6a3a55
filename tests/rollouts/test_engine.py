"""The rollout engine with a real tiny policy and the real sandbox: tool loop, loss masks, limits,
partial rollouts."""

import pytest

from k2rl.policy.build import load_policy
from k2rl.rollouts.backends import Sampling, TransformersBackend
from k2rl.rollouts.engine import Limits, RolloutEngine
from k2rl.rollouts.scores import precomputed_rewards
from k2rl.rollouts.tool_calls import tool_results_text
from k2rl.rollouts.tools import PythonTool

from rollout_support import BAD_PROMPT, GOOD_CALL, GOOD_PROMPT

GREEDY = Sampling(temperature=0.0)


@pytest.fixture(scope="module")
def python_tool():
    tool = PythonTool(workers=2)
    yield tool
    tool.close()


def engine(policy, tools, **limits):
    model, tokenizer = policy
    return RolloutEngine(tokenizer, tools=tools, limits=Limits(**limits), backend=TransformersBackend(model, tokenizer))


def decode(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=False)


def test_tool_call_runs_in_sandbox_and_only_policy_tokens_are_trained(tool_policy, python_tool):
    _, tokenizer = tool_policy
    out = engine(tool_policy, {"python": python_tool}, max_turns=3, token_budget=200).run(
        [{"prompt": GOOD_PROMPT}], 1, GREEDY)
    ids, mask = out["completion_ids"][0], out["env_mask"][0]
    tool_text = tool_results_text(tokenizer, [("functions.python:0", "42\n")])  # what the sandbox printed
    assert decode(tokenizer, ids) == f"{GOOD_CALL}<|im_end|>{tool_text}The answer is 42.<|im_end|>"
    assert out["stop_reason"] == ["answer"]
    policy_text = decode(tokenizer, [i for i, m in zip(ids, mask) if m])
    env_text = decode(tokenizer, [i for i, m in zip(ids, mask) if not m])
    assert policy_text == f"{GOOD_CALL}<|im_end|>The answer is 42.<|im_end|>"
    assert env_text == tool_text
    assert len(out["logprobs"][0]) == len(ids)


def test_malformed_call_gets_an_error_message_and_the_rollout_goes_on(tool_policy, python_tool):
    _, tokenizer = tool_policy
    e = engine(tool_policy, {"python": python_tool}, max_turns=3, token_budget=200)
    out = e.run([{"prompt": BAD_PROMPT}], 1, GREEDY)
    text = decode(tokenizer, out["completion_ids"][0])
    assert "## Return of functions.python:0\nerror: arguments of functions.python:0 are not valid JSON" in text
    assert e.last_stats.tool_calls == 1
    assert out["stop_reason"][0] in ("answer", "token_budget")  # whatever it says next, nothing raised


def test_max_turns_stops_before_running_a_call_it_could_not_read(tool_policy, python_tool):
    out = engine(tool_policy, {"python": python_tool}, max_turns=1, token_budget=200).run(
        [{"prompt": GOOD_PROMPT}], 1, GREEDY)
    assert out["stop_reason"] == ["max_turns"]
    assert decode(tool_policy[1], out["completion_ids"][0]) == GOOD_CALL + "<|im_end|>"
    assert all(out["env_mask"][0])


def test_max_tool_calls_limit(tool_policy, python_tool):
    e = engine(tool_policy, {"python": python_tool}, max_turns=3, max_tool_calls=0, token_budget=200)
    out = e.run([{"prompt": GOOD_PROMPT}], 1, GREEDY)
    assert out["stop_reason"] == ["max_tool_calls"] and e.last_stats.tool_calls == 0


def test_token_budget_cuts_policy_and_tool_tokens(tool_policy, python_tool):
    _, tokenizer = tool_policy
    call_length = len(tokenizer(GOOD_CALL + "<|im_end|>", add_special_tokens=False)["input_ids"])
    for budget in (5, call_length + 3):  # inside the first turn; inside the tool's answer
        out = engine(tool_policy, {"python": python_tool}, max_turns=3, token_budget=budget).run(
            [{"prompt": GOOD_PROMPT}], 1, GREEDY)
        assert len(out["completion_ids"][0]) == budget and out["stop_reason"] == ["token_budget"]
        assert sum(out["env_mask"][0]) == min(budget, call_length)


def test_partial_rollout_continues_to_the_same_tokens_as_one_uninterrupted_rollout(tiny_policy_dir):
    policy = load_policy(str(tiny_policy_dir))
    rows = [{"prompt": [{"role": "user", "content": "what is 12 + 30?"}]},
            {"prompt": [{"role": "user", "content": "def f(x): return x"}]}]
    whole = engine((policy.model, policy.tokenizer), {}, token_budget=24).run(rows, 1, GREEDY)

    paused = engine((policy.model, policy.tokenizer), {}, token_budget=24, iteration_budget=7)
    first = paused.run(rows, 1, GREEDY)
    assert first["stop_reason"] == ["paused", "paused"] and [len(c) for c in first["completion_ids"]] == [7, 7]
    assert first["env_mask"] == [[1] * 7, [1] * 7]
    outputs = [first]
    for _ in range(3):  # 7 + 7 + 7 + 3 tokens
        outputs.append(paused.run(rows, 1, GREEDY))
    last = outputs[-1]
    assert last["stop_reason"] == whole["stop_reason"] == ["token_budget", "token_budget"]
    assert last["completion_ids"] == whole["completion_ids"]
    # only the last iteration's own tokens are trained: earlier ones came from older weights
    assert last["env_mask"] == [[0] * 21 + [1] * 3] * 2
    assert paused.partial.carried == [] and paused.partial.skipped_groups == 3 * 1 * 2


def test_paused_groups_are_unscored_and_carried_groups_take_slots_first(tiny_policy_dir):
    policy = load_policy(str(tiny_policy_dir))
    scored = []

    def count_reward(prompts, completions, **columns):
        scored.append(len(completions))
        return [float(len(c)) for c in completions]

    model, tokenizer = policy.model, policy.tokenizer
    e = RolloutEngine(tokenizer, limits=Limits(token_budget=10, iteration_budget=6), reward_funcs=[count_reward],
                      backend=TransformersBackend(model, tokenizer))
    old = [{"prompt": "a b c", "tag": "old"}] * 2
    new = [{"prompt": "x y z", "tag": "new"}] * 2
    first = e.run(old, 2, Sampling(temperature=1.0))
    assert first["k2rl_reward_0"] == [None, None] and scored == []  # paused: no reward, no advantage
    second = e.run(new, 2, Sampling(temperature=1.0))
    assert e.partial.carried == []
    assert second["stop_reason"] == ["token_budget", "token_budget"] and scored == [2]
    assert second["prompt_ids"][0] == first["prompt_ids"][0]  # the old group used the slot
    assert all(r is not None for r in second["k2rl_reward_0"])
    assert e.partial.skipped_groups == 1
    (reader,) = precomputed_rewards([count_reward])
    assert reader.__name__ == "count_reward" and reader([], [], k2rl_reward_0=[1.0]) == [1.0]


def test_per_task_budgets_cut_rows_and_mark_them_for_the_budget_reward(tiny_policy_dir):
    from k2rl.config import BudgetConfig
    from k2rl.rewards import get_reward
    from k2rl.rollouts.budget import EXCEEDED_COLUMN

    policy = load_policy(str(tiny_policy_dir))  # random weights: it never ends a turn within a few tokens
    rows = [{"prompt": [{"role": "user", "content": "what is 12 + 30?"}], "task": task} for task in ("short", "long")]
    budget = BudgetConfig(column="task", budgets={"short": 3}, default=None, penalty=0.5)
    out = engine((policy.model, policy.tokenizer), {}, token_budget=12, budget=budget).run(rows, 1, GREEDY)
    assert [len(ids) for ids in out["completion_ids"]] == [3, 12]  # the task's budget, then the engine's own
    assert out[EXCEEDED_COLUMN] == [True, False]  # only a per-task budget is priced
    assert get_reward("budget_exceeded", penalty=0.5)([], [], budget_exceeded=out[EXCEEDED_COLUMN]) == [-0.5, 0.0]

    paused = engine((policy.model, policy.tokenizer), {}, token_budget=12, iteration_budget=2, budget=budget).run(rows, 1, GREEDY)
    assert paused[EXCEEDED_COLUMN] == [None, None]  # unfinished: no reward yet, like every other reward
    assert get_reward("budget_exceeded")([], [], budget_exceeded=[None]) == [None]


def test_a_row_a_reward_failed_on_gets_no_reward_from_any(tiny_policy_dir):
    """As on TRL's path: the other rewards' scores must not stand in for the failed one."""
    from k2rl.rewards.isolation import isolate

    policy = load_policy(str(tiny_policy_dir))
    victims = []

    def flaky(prompts, completions, **columns):
        if len(completions) > 1:
            victims.append(completions[1])
        if any(c is v for c in completions for v in victims):
            raise ValueError("cannot parse")
        return [1.0] * len(completions)

    def steady(prompts, completions, **columns):
        return [0.5] * len(completions)

    model, tokenizer = policy.model, policy.tokenizer
    e = RolloutEngine(tokenizer, limits=Limits(token_budget=6), backend=TransformersBackend(model, tokenizer),
                      reward_funcs=[isolate(flaky, "flaky"), isolate(steady, "steady")])
    out = e.run([{"prompt": "a b c"}] * 2, 2, Sampling(temperature=1.0))
    assert out["k2rl_reward_0"] == [1.0, None]
    assert out["k2rl_reward_1"] == [0.5, None]
    # the failure travels with the row, so the trainer counts rewards/<name>/failures on this path too
    assert out["k2rl_reward_failed_0"] == [False, True] and out["k2rl_reward_failed_1"] == [False, False]
    flaky_reader, steady_reader = precomputed_rewards(e.reward_funcs)
    assert flaky_reader([], [], **{k: v for k, v in out.items() if k.startswith("k2rl_reward")}) == [1.0, None]
    assert flaky_reader.failed_rows() == [1]
    steady_reader([], [], **{k: v for k, v in out.items() if k.startswith("k2rl_reward")})
    assert steady_reader.failed_rows() == []
