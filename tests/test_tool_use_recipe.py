"""The tool_use recipe end to end, a few steps: the tool_use environment (the python tool with the row's
names bound) through the engine, the held-out tool-use figures in the summary and the printed line, the
environment's own reward, and partial rollouts with tools."""

import json

import pytest

from k2rl.cli import main

FAST = [
    "data.train_size=48",
    "data.eval_size=8",
    "warm_start.max_steps=4",
    "trainer.max_steps=2",
    "trainer.per_device_train_batch_size=8",
    "trainer.num_generations=4",
    "trainer.eval_steps=2",
    "trainer.logging_steps=1",
    "trainer.max_completion_length=48",
    "rollout.token_budget=48",
    "eval.max_new_tokens=48",
]


def _run(tmp_path, recipe, name, *overrides):
    code = main(["train", str(recipe), f"output_dir={tmp_path}", f"run_name={name}", *FAST, *overrides])
    assert code == 0
    run = tmp_path / name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return run, json.loads((run / "summary.json").read_text()), records


@pytest.fixture(scope="module")
def recipe(request):
    return request.config.rootpath / "configs" / "tool_use.yaml"


def test_tool_use_recipe_reports_tool_use_before_and_after(tmp_path, recipe, capsys):
    run, summary, records = _run(tmp_path, recipe, "tools")
    assert set(summary["tool_use"]) == {"before", "after"}
    for side in ("before", "after"):
        figures = summary["tool_use"][side]
        assert set(figures) == {"call_rate", "calls_per_completion", "calls_per_solved", "copy_rate", "failed_calls"}
        assert all(0.0 <= figures[k] <= 1.0 for k in ("call_rate", "copy_rate", "failed_calls"))
    out = capsys.readouterr().out
    assert "held-out tool use (greedy): call rate" in out
    assert "environment tool_use, max 3 turns" in out  # the environment's own limit, which the engine applies
    rl = [r for r in records if r["phase"] == "rl" and "rollouts/infrastructure_failures" in r]
    assert rl and all(r["rollouts/infrastructure_failures"] == 0 for r in rl)


def test_tool_use_trains_on_the_environment_s_own_reward(tmp_path, recipe):
    run, summary, records = _run(tmp_path, recipe, "env", "rewards=[{name: environment}]")
    assert summary["metric"] == "environment" and summary["tool_use"]["after"]
    rl = [r for r in records if r["phase"] == "rl"]
    assert any("rewards/environment/mean" in r for r in rl)


def test_the_environment_reward_without_an_environment_is_refused_before_any_work(tmp_path, request, capsys):
    recipe = request.config.rootpath / "configs" / "quickstart.yaml"  # no rollout.environment
    code = main(["train", str(recipe), f"output_dir={tmp_path}", "rewards=[{name: environment}]"])
    assert code != 0
    assert "rewards: environment is the score of rollout.environment" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_tool_use_recipe_runs_the_tool_loop_with_partial_rollouts(tmp_path, recipe):
    run, _, records = _run(tmp_path, recipe, "partial", "rollout.partial_rollouts=true", "rollout.iteration_budget=16",
                           "trainer.eval_steps=0")
    rl = [r for r in records if r["phase"] == "rl" and "rollouts/paused_groups" in r]
    assert len(rl) == 2 and (run / "adapter").is_dir()
    assert rl[0]["rollouts/paused_groups"] > 0  # 48-token rollouts, 16 policy tokens per iteration
