"""Environments with a real tool-calling tiny policy: per-row state and tools, limits, an environment-owned
reward, setup/teardown; infrastructure failures (a real sandbox_error, a failing environment) give the
row no reward and no loss, counted."""

import json

import pytest

from k2rl.errors import K2RLError
from k2rl.rewards import get_reward
from k2rl.rollouts.backends import Sampling, TransformersBackend
from k2rl.rollouts.engine import Limits, RolloutEngine
from k2rl.rollouts.scores import precomputed_rewards
from k2rl.rollouts.environment import Environment, ToolUseEnvironment, build_environment
from k2rl.rollouts.tools import PythonTool

from rollout_support import GOOD_PROMPT

GREEDY = Sampling(temperature=0.0)


class SecretEnvironment(Environment):
    """Each row has its own secret; the policy's ``python`` call reads it back (whatever the code says)."""

    name = "secret"

    def __init__(self):
        self.set_up, self.torn_down = [], []

    def setup(self, row):
        state = {"secret": row["secret"], "calls": 0}
        self.set_up.append(row["secret"])
        return state

    def tools(self, state):
        def python(arguments):
            state["calls"] += 1
            return f"{state['secret']}\n"

        return {"python": python}

    def reward(self, state, messages, row):
        read = any(row["secret"] in m["content"] for m in messages if m["role"] == "tool")
        return float(state["calls"]) + (0.5 if read else 0.0)

    def teardown(self, state):
        self.torn_down.append(state["secret"])


def _engine(policy, environment, reward_names=("environment",), **limits):
    model, tokenizer = policy
    rewards = [get_reward(n) for n in reward_names]
    return RolloutEngine(tokenizer, environment=environment, limits=Limits(**{"max_turns": 3, "token_budget": 200, **limits}),
                         reward_funcs=rewards, backend=TransformersBackend(model, tokenizer))


def _rows(*secrets):
    return [{"prompt": GOOD_PROMPT, "answer": "42", "secret": s} for s in secrets]


def test_each_row_has_its_own_state_tools_and_environment_reward(tool_policy):
    env = SecretEnvironment()
    engine = _engine(tool_policy, env)
    out = engine.run(_rows("314", "271"), 1, GREEDY)
    texts = [tool_policy[1].decode(ids, skip_special_tokens=False) for ids in out["completion_ids"]]
    assert "## Return of functions.python:0\n314\n" in texts[0] and "## Return of functions.python:0\n271\n" in texts[1]
    assert out["k2rl_reward_0"] == [1.5, 1.5]  # one call each, and the tool's answer is the row's own secret
    assert env.set_up == ["314", "271"] and sorted(env.torn_down) == ["271", "314"]
    assert engine.last_stats.infrastructure_failures == 0


def test_environment_limits_replace_the_recipe_s(tool_policy):
    class NoCalls(SecretEnvironment):
        max_tool_calls = 0

    out = _engine(tool_policy, NoCalls(), max_tool_calls=8).run(_rows("1"), 1, GREEDY)
    assert out["stop_reason"] == ["max_tool_calls"] and out["k2rl_reward_0"] == [0.0]


def _assert_unscored_and_untrained(engine, out, rows):
    assert out["stop_reason"] == ["infrastructure_error"] * rows
    for i in range(len(engine.reward_funcs)):
        assert out[f"k2rl_reward_{i}"] == [None] * rows  # no reward, never a fake 0
    assert all(not any(mask) for mask in out["env_mask"])  # no loss
    assert engine.last_stats.infrastructure_failures == rows
    reader = precomputed_rewards(engine.reward_funcs)[0]  # what the trainer reads back
    assert reader([], [], **out) == [None] * rows


def test_a_real_sandbox_error_gives_the_row_no_reward_and_no_loss(tool_policy):
    # A remote sandbox with no server behind it: every verdict is sandbox_error, an infrastructure failure.
    tool = PythonTool(backend="remote", sandbox_options={"endpoints": ["127.0.0.1:9"], "retry_window_s": 1.0,
                                                         "max_attempts": 1, "connect_timeout_s": 1.0})
    try:
        model, tokenizer = tool_policy
        engine = RolloutEngine(tokenizer, tools={"python": tool}, limits=Limits(max_turns=3, token_budget=200),
                               reward_funcs=[get_reward("exact_answer")], backend=TransformersBackend(model, tokenizer))
        out = engine.run([{"prompt": GOOD_PROMPT, "answer": "42"}] * 2, 2, GREEDY)
    finally:
        tool.close()
    _assert_unscored_and_untrained(engine, out, 2)
    # the policy sampled its call (those tokens exist) but is not trained on them, and read no fake answer
    assert out["completion_ids"][0] and "Return of" not in tokenizer.decode(out["completion_ids"][0])


@pytest.mark.parametrize("broken", ["setup", "tools", "reward"])
def test_an_environment_that_fails_gives_the_row_no_reward_at_all(tool_policy, broken):
    class Broken(SecretEnvironment):
        pass

    def fail(self, *args):
        raise RuntimeError(f"{broken} is broken")

    setattr(Broken, broken, fail)
    env = Broken()
    engine = _engine(tool_policy, env, reward_names=("environment", "exact_answer"))
    out = engine.run(_rows("1", "2"), 2, GREEDY)
    _assert_unscored_and_untrained(engine, out, 2)
    if broken != "setup":
        assert len(env.torn_down) == 2  # what was set up is torn down


def test_tool_use_environment_answers_with_python_and_owns_its_reward(tool_policy):
    env = ToolUseEnvironment()
    try:
        engine = _engine(tool_policy, env, reward_names=("environment",), max_turns=1)
        out = engine.run([{"prompt": GOOD_PROMPT, "answer": "42"}], 1, GREEDY)
    finally:
        env.close()
    assert (env.max_turns, env.max_tool_calls) == (3, 2)  # its own limits: max_turns=1 above is replaced
    text = tool_policy[1].decode(out["completion_ids"][0], skip_special_tokens=False)
    assert "## Return of functions.python:0\n42\n" in text  # print(6*7) ran in the sandbox
    assert out["k2rl_reward_0"] == [1.0]


def test_environment_names_are_checked():
    with pytest.raises(K2RLError, match="unknown environment 'nope'"):
        build_environment("nope", {})
    with pytest.raises(K2RLError, match="not a subclass"):
        build_environment("k2rl.rollouts.tools:PythonTool", {})
    with pytest.raises(K2RLError, match="cannot import"):
        build_environment("no_such_module:Env", {})
    with pytest.raises(K2RLError, match="do not fit 'tool_use'"):
        build_environment("tool_use", {"colour": "red"})
    assert isinstance(build_environment("test_environment:SecretEnvironment", {}), SecretEnvironment)


def test_tools_and_an_environment_together_are_refused(tiny_policy_dir):
    from k2rl.config import RolloutConfig
    from k2rl.rollouts.wiring import recipe_environment

    with pytest.raises(K2RLError, match="rollout.tools and rollout.environment"):
        recipe_environment(RolloutConfig(tools=["python"], environment="tool_use"))
    with pytest.raises(K2RLError, match="environment_options without"):
        recipe_environment(RolloutConfig(environment_options={"sandbox": "local"}))


def test_the_environment_reward_without_an_environment_is_an_error():
    with pytest.raises(K2RLError, match="needs rollout.environment"):
        get_reward("environment")(prompts=["p"], completions=["c"], answer=["1"])


def test_the_readme_s_worked_example_builds_and_scores(tmp_path, monkeypatch, request):
    readme = (request.config.rootpath / "README.md").read_text()
    code = readme.split("```python\n# my_envs.py\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my_envs.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    env = build_environment("my_envs:Lookup", {})
    row = {"prompt": GOOD_PROMPT, "table": '{"pi": "314"}', "answer": "314"}
    state = env.setup(row)
    lookup = env.tools(state)["lookup"]
    assert lookup({"key": "pi"}) == "314" and lookup({"key": "e"}).startswith("error: no key")
    assert env.reward(state, [{"role": "assistant", "content": "It is 314."}], row) == pytest.approx(0.9)
    assert env.max_tool_calls == 2 and env.has_reward


class NoReward(Environment):
    pass


@pytest.mark.parametrize("overrides, message", [
    (["rollout.environment=no_such_env"], "unknown environment 'no_such_env'"),
    (["rollout.environment=test_environment:NoReward", "rewards=[{name: environment}]"],
     "has no reward of its own"),
    (["rollout.tools=[python]"], "rollout.tools and rollout.environment"),
])
def test_environment_mistakes_are_refused_before_any_model_is_built(tmp_path, capsys, request, overrides, message):
    from k2rl.cli import main

    recipe = request.config.rootpath / "configs" / "tool_use.yaml"  # rollout.environment: tool_use
    assert main(["train", str(recipe), f"output_dir={tmp_path}", *overrides]) != 0
    assert message in capsys.readouterr().err
    assert not any(tmp_path.rglob("initial_policy"))


def test_tool_use_environment_binds_the_row_s_names_and_earlier_results():
    from k2rl.data.tool_use import tool_use_splits

    train, _ = tool_use_splits(40, 4, seed=0, tool_fraction=1.0, two_call_fraction=1.0, named=True)
    row = train[0]
    a, b, c = (int(v) for v in json.loads(row["bindings"]).values())
    env = ToolUseEnvironment()
    try:
        state, other = env.setup(row), env.setup(train[1])
        python = env.tools(state)["python"]
        assert python({"code": "print(b * c)"}) == f"{b * c}\n"
        assert python({"code": "print(a * r0)"}) == f"{a * b * c}\n" == f"{row['answer']}\n"
        assert env.tools(other)["python"]({"code": "print(r0)"}).startswith("error (crashed): NameError")
        assert python({"code": 3}).startswith("error: python takes one argument")
    finally:
        env.close()
