"""The held-out evaluation of a tool recipe runs the tool loop greedily and scores the final answer."""

from datasets import Dataset

from k2rl import resources
from k2rl.config import EvalConfig, RolloutConfig
from k2rl.rewards import get_reward
from k2rl.run.evaluation import evaluate, tool_completions

from rollout_support import GOOD_PROMPT

TOOLS = RolloutConfig(tools=["python"], max_turns=3, max_tool_calls=1, token_budget=200)


def test_tool_completions_are_the_whole_conversation_with_the_real_tool_answer(tool_policy):
    model, tokenizer = tool_policy
    try:
        [messages] = tool_completions(model, tokenizer, [GOOD_PROMPT], TOOLS, max_new_tokens=200, batch_size=4)
    finally:
        resources.close_all()
    assert [m["role"] for m in messages] == ["assistant", "tool", "assistant"]
    assert messages[0]["tool_calls"][0]["function"]["name"] == "python"
    assert messages[1]["content"] == "42\n"  # what the sandbox printed for print(6*7)
    assert messages[2]["content"] == "The answer is 42."


def test_a_tool_recipe_is_judged_on_the_answer_after_the_tool_and_a_plain_one_on_its_first_turn(tool_policy):
    model, tokenizer = tool_policy
    rows = Dataset.from_list([{"prompt": GOOD_PROMPT, "answer": "42"}])
    rewards = [("exact_answer", get_reward("exact_answer"))]
    config = EvalConfig(max_new_tokens=200, batch_size=4)
    try:
        with_tools = evaluate(model, tokenizer, rows, rewards, config, rollout=TOOLS)
        single_turn = evaluate(model, tokenizer, rows, rewards, config, rollout=RolloutConfig())
    finally:
        resources.close_all()
    assert with_tools["accuracy"] == 1.0
    assert single_turn["accuracy"] == 0.0  # its one turn is the tool call: no answer in it
