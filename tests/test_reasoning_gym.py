"""reasoning-gym as a data source and verifier (optional extra): splits, the task's own scoring, clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from k2rl.config import DataConfig
from k2rl.data.sources import load_task_data
from k2rl.errors import K2RLError
from k2rl.rewards import get_reward
from k2rl.rewards.reasoning_gym import committed_answer

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "reasoning_gym.yaml"
TASKS = ["chain_sum", {"name": "leg_counting", "min_animals": 1, "max_animals": 2}]


def _data(**options):
    return load_task_data(DataConfig(source="reasoning_gym", train_size=40, eval_size=10, options={"tasks": TASKS, **options}), seed=0)


def _score(rows, texts):
    completions = [[{"role": "assistant", "content": t}] for t in texts]
    return get_reward("reasoning_gym")(rows["prompt"], completions, task=rows["task"], rg_entry=rows["rg_entry"])


def test_splits_per_task_from_disjoint_seeds_without_shared_questions():
    data = _data(size=12)
    assert len(data.train) == 24 and len(data.eval) == 10
    assert sorted(set(data.train["task"])) == sorted(set(data.eval["task"])) == ["chain_sum", "leg_counting"]
    assert not set(data.train["question"]) & set(data.eval["question"])
    assert data.train[0]["prompt"] == [{"role": "user", "content": data.train[0]["question"]}]
    again, other = _data(size=12), _data(size=12, seed=7)
    assert again.train["question"] == data.train["question"]  # reproducible
    assert other.train["question"] != data.train["question"]  # the option seed moves the items
    legs = [json.loads(e) for e, t in zip(data.train["rg_entry"], data.train["task"]) if t == "leg_counting"]
    assert all(1 <= e["metadata"]["num_animals"] <= 2 for e in legs)  # the task's own config applied


def test_reward_is_the_tasks_own_score_answer():
    import reasoning_gym

    rows = _data().eval
    assert _score(rows, [f"Adding up: the answer is {a}." for a in rows["answer"]]) == [1.0] * len(rows)
    wrong = [str(int(a) + 1) for a in rows["answer"]]
    expected = [reasoning_gym.get_score_answer_fn(t)(w, json.loads(e)) for t, w, e in zip(rows["task"], wrong, rows["rg_entry"])]
    assert _score(rows, [f"The answer is {w}." for w in wrong]) == expected == [0.0] * len(rows)


def test_committed_answer():
    assert committed_answer("3 + 4 = 7. The answer is 7.") == "7"
    assert committed_answer("answer: olleh\nmore text") == "olleh"
    assert committed_answer("  42 ") == "42"
    assert committed_answer("The answer is") == ""


@pytest.mark.parametrize("options, message", [
    ({"tasks": ["no_such_task"]}, "unknown reasoning-gym task 'no_such_task'"),
    ({"tasks": [{"name": "leg_counting", "max_animals": 0}]}, "reasoning-gym task 'leg_counting': "),
    ({"tasks": []}, "data.options.tasks: list the reasoning-gym tasks"),
    ({"tasks": ["chain_sum"], "sise": 3}, r"data\.options\.sise: not an option of the built-in task 'reasoning_gym'.*did you mean 'size'\?"),
])
def test_bad_options_are_one_line(options, message):
    with pytest.raises(K2RLError, match=message) as info:
        load_task_data(DataConfig(source="reasoning_gym", train_size=4, eval_size=2, options=options), seed=0)
    assert "\n" not in str(info.value)


def test_without_the_extra_train_stops_in_one_line_naming_it(monkeypatch, tmp_path, capsys):
    from k2rl.cli import main
    from k2rl.rewards import reasoning_gym as reward_module

    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # import reasoning_gym -> ImportError
    assert main(["train", str(RECIPE), f"output_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "k2rl: error: data.source: reasoning_gym: reasoning-gym is not installed: pip install 'k2rl[reasoning-gym]'"]
    reward_module._scorer.cache_clear()
    with pytest.raises(K2RLError, match=r"^reward reasoning_gym: reasoning-gym is not installed: pip install 'k2rl\[reasoning-gym\]'$"):
        reward_module.reasoning_gym_reward(["q"], ["The answer is 1."], task=["chain_sum"], rg_entry=['{"answer": "1"}'])
    reward_module._scorer.cache_clear()


def test_recipe_runs_two_rl_steps(tmp_path):
    from k2rl.cli import main

    fast = ["trainer.max_steps=2", "warm_start.max_steps=3", "data.eval_size=8", "data.options.size=16",
            "trainer.per_device_train_batch_size=8", "trainer.eval_steps=0", "eval.max_new_tokens=8"]
    assert main(["train", str(RECIPE), f"output_dir={tmp_path}", "run_name=rg", *fast]) == 0
    summary = json.loads((tmp_path / "rg" / "summary.json").read_text())
    assert 0.0 <= summary["accuracy_after"] <= 1.0
    records = [json.loads(line) for line in (tmp_path / "rg" / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/reasoning_gym/mean" in r for r in records if r["phase"] == "rl")
