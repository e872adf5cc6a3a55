"""The tool_use task's data and the held-out tool-use figures."""

import json

import pytest

from k2rl.data.tool_use import tool_use_splits
from k2rl.errors import K2RLError
from k2rl.rewards.answer import answers_match
from k2rl.run.tool_metrics import tool_use_line, tool_use_report, tool_use_summary


def _printed(code: str) -> str:
    """What a demonstration's call prints, computed here by Python itself."""
    assert code.startswith("print(") and code.endswith(")")
    left, right = code[len("print("):-1].split(" * ")
    return f"{int(left) * int(right)}\n"


def test_demonstrations_call_the_tool_with_the_question_s_factors_and_copy_its_last_result():
    train, _ = tool_use_splits(300, 20, seed=0, tool_fraction=0.5, two_call_fraction=0.5)
    tool_rows = [r for r in train if r["demonstration_messages"]]
    assert 0.35 < len(tool_rows) / len(train) < 0.65
    assert {r["calls"] for r in tool_rows} == {1, 2}
    for row in tool_rows:
        messages = json.loads(row["demonstration_messages"])
        factors = row["question"].removeprefix("What is ").removesuffix("?").split(" * ")
        calls = [m for m in messages if m.get("tool_calls")]
        results = [m["content"] for m in messages if m["role"] == "tool"]
        assert len(calls) == row["calls"] == len(factors) - 1
        codes = [json.loads(c["tool_calls"][0]["function"]["arguments"])["code"] for c in calls]
        assert codes[0] == f"print({factors[-2]} * {factors[-1]})"  # the last two, as in a two-factor problem
        if len(codes) == 2:  # the first factor times what the first call printed
            assert codes[1] == f"print({factors[0]} * {results[0].strip()})"
        assert results == [_printed(code) for code in codes]
        assert [c["tool_calls"][0]["id"] for c in calls] == [f"functions.python:{i}" for i in range(len(calls))]
        assert answers_match(messages[-1]["content"], row["answer"])
        assert results[-1].strip() == row["answer"]


def test_every_number_has_a_fixed_length_so_each_copy_is_over_a_fixed_distance():
    train, held_out = tool_use_splits(400, 100, seed=1, two_call_fraction=0.3)
    for row in [*train, *held_out]:
        factors = row["question"].removeprefix("What is ").removesuffix("?").split(" * ")
        assert all(len(f) == 3 for f in factors)
        assert len(row["answer"]) == (6 if len(factors) == 2 else 9)
        assert int(row["answer"]) == eval(" * ".join(factors))  # noqa: S307 - our own digits


def test_held_out_shares_no_question_with_training_and_has_no_demonstrations():
    train, held_out = tool_use_splits(2000, 200, seed=2)
    assert not set(train["question"]) & set(held_out["question"])
    assert not any(held_out["demonstration_messages"])
    direct = [r for r in train if not r["demonstration_messages"]]
    assert all(r["demonstration"] == f"The answer is {r['answer']}." for r in direct)


def test_seeds_give_different_items_and_the_same_seed_the_same():
    assert tool_use_splits(50, 10, seed=0)[0]["question"] == tool_use_splits(50, 10, seed=0)[0]["question"]
    assert tool_use_splits(50, 10, seed=0)[0]["question"] != tool_use_splits(50, 10, seed=1)[0]["question"]


@pytest.mark.parametrize("option", ["tool_fraction", "two_call_fraction"])
def test_fractions_outside_zero_one_are_refused(option):
    with pytest.raises(K2RLError, match=option):
        tool_use_splits(10, 5, seed=0, **{option: 1.5})


def _called(result: str, answer: str) -> list[dict]:
    call = {"id": "functions.python:0", "type": "function", "function": {"name": "python", "arguments": "{}"}}
    return [{"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": result},
            {"role": "assistant", "content": f"The answer is {answer}."}]


def test_tool_use_report_counts_calls_copies_and_failed_calls():
    completions = [
        _called("123456\n", "123456"),  # called and copied: solved
        _called("123456\n", "999999"),  # called, answered something else
        _called("error: arguments of functions.python:0 are not valid JSON", "5"),
        [{"role": "assistant", "content": "The answer is 7."}],  # no call
    ]
    report = tool_use_report(completions, [True, False, False, False])
    assert report["call_rate"] == 0.75
    assert report["calls_per_completion"] == 0.75
    assert report["calls_per_solved"] == 1.0
    assert report["copy_rate"] == pytest.approx(1 / 3)
    assert report["failed_calls"] == pytest.approx(1 / 3)


def test_tool_use_line_and_summary_read_the_flat_records():
    before = {"tool_use/call_rate": 0.1, "tool_use/calls_per_solved": 1.0, "tool_use/copy_rate": 0.5}
    after = {"tool_use/call_rate": 0.9, "tool_use/calls_per_solved": 1.25, "tool_use/copy_rate": 0.95}
    line = tool_use_line(before, after)
    assert line == ("held-out tool use (greedy): call rate 0.100 -> 0.900; calls per solved 1.000 -> 1.250; "
                    "answers copying the tool 0.500 -> 0.950")
    assert tool_use_summary(before, after)["after"]["call_rate"] == 0.9
    assert tool_use_line({}, {"accuracy": 1.0}) is None and tool_use_summary({}, {"accuracy": 1.0}) is None


def test_named_questions_bind_the_factors_and_calls_use_the_names():
    train, held_out = tool_use_splits(200, 20, seed=0, tool_fraction=1.0, two_call_fraction=0.5, named=True)
    for row in [*train, *held_out]:
        bindings = json.loads(row["bindings"])
        names = list(bindings)
        assert names == list("abc"[:len(names)])
        assert row["question"] == (", ".join(f"{n} = {v}" for n, v in bindings.items())
                                   + f". What is {' * '.join(names)}?")
    for row in train:
        calls = [json.loads(m["tool_calls"][0]["function"]["arguments"])["code"]
                 for m in json.loads(row["demonstration_messages"]) if m.get("tool_calls")]
        assert calls == (["print(a * b)"] if row["calls"] == 1 else ["print(b * c)", "print(a * r0)"])
    assert not any(tool_use_splits(20, 4, seed=0)[0]["bindings"])  # unnamed questions bind nothing
