"""The held-out evaluation as a phase and a command: `k2rl eval RUN_DIR` reproduces the figures
`k2rl train` logged after RL, and on the warm-start model without adapter the ones before RL."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

from k2rl.cli import main
from k2rl.config import EvalConfig, load_config
from k2rl.errors import K2RLError
from k2rl.policy.build import load_policy
from k2rl.run.evaluation import by_line, evaluate, flat_metrics
from test_train_smoke import FAST

# Long enough a warm start that the held-out figures are not all zero; pass@2 on top of greedy.
EVAL_RUN = [*FAST, "warm_start.max_steps=40", "trainer.max_steps=4", "trainer.learning_rate=0.05", "eval.k=2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, request):
    out = tmp_path_factory.mktemp("runs")
    recipe = request.config.rootpath / "configs" / "quickstart.yaml"
    assert main(["train", str(recipe), f"output_dir={out}", "run_name=eval", *EVAL_RUN]) == 0
    return out / "eval"


def _logged(run_dir, step):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (record,) = [r for r in records if r["phase"] == "eval" and r["step"] == step]
    return {k: v for k, v in record.items() if k not in ("phase", "step", "time")}


def _flat(report):
    return {"accuracy": report["accuracy"],
            **{f"{label}/{k}": v for label, stats in report["rewards"].items() for k, v in stats.items()}}


def test_eval_of_the_run_directory_reproduces_after(run_dir, capsys):
    assert main(["eval", str(run_dir)]) == 0
    report = json.loads((run_dir / "eval-warm_start+adapter.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert report["adapter"] == str(run_dir / "adapter") and report["metric"] == summary["metric"] == "exact_answer"
    assert report["accuracy"] == summary["accuracy_after"]
    assert _flat(report) == _logged(run_dir, 4)  # greedy and pass@2, figure by figure
    assert f"k2rl: eval accuracy={summary['accuracy_after']:.3f} metric=exact_answer rows=16" in capsys.readouterr().out


def test_eval_of_the_warm_start_without_adapter_reproduces_before(run_dir, tmp_path):
    out = tmp_path / "before.json"
    assert main(["eval", str(run_dir), "--model", str(run_dir / "warm_start"), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["adapter"] is None
    assert report["accuracy"] == json.loads((run_dir / "summary.json").read_text())["accuracy_before"]
    assert _flat(report) == _logged(run_dir, 0)


def test_eval_takes_overrides_anywhere_and_never_writes_over_another_report(run_dir):
    trained = run_dir / "eval-warm_start+adapter.json"
    main(["eval", str(run_dir)]) if not trained.exists() else None
    kept = trained.read_text()
    # an override after --model (argparse alone refuses it), then the same evaluation again
    assert main(["eval", str(run_dir), "--model", str(run_dir / "warm_start"), "eval.k=0"]) == 0
    assert main(["eval", str(run_dir), "eval.k=0", "--model", str(run_dir / "warm_start")]) == 0
    first, second = run_dir / "eval-warm_start.json", run_dir / "eval-warm_start-2.json"
    assert json.loads(first.read_text())["adapter"] is None and "pass@2" not in first.read_text()
    assert json.loads(second.read_text())["accuracy"] == json.loads(first.read_text())["accuracy"]
    assert trained.read_text() == kept
    with pytest.raises(SystemExit):
        main(["eval", str(run_dir), "--no-such-flag"])


def test_eval_out_refuses_an_existing_report(run_dir, tmp_path, capsys):
    taken = tmp_path / "taken.json"
    taken.write_text("{}")
    assert main(["eval", str(run_dir), "--out", str(taken)]) == 2
    assert "exists" in capsys.readouterr().err and taken.read_text() == "{}"


def test_resume_of_a_finished_run_says_so_and_trains_nothing(run_dir, request, capsys):
    recipe = request.config.rootpath / "configs" / "quickstart.yaml"
    summary = (run_dir / "summary.md").read_text()
    adapter = (run_dir / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    checkpoints = sorted(p.name for p in (run_dir / "rl_tmp").glob("checkpoint-*"))
    assert main(["train", str(recipe), f"output_dir={run_dir.parent}", "run_name=eval", *EVAL_RUN, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "already finished" in out and "4 of 4 RL steps" in out
    assert (run_dir / "summary.md").read_text() == summary
    assert (run_dir / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == adapter
    assert sorted(p.name for p in (run_dir / "rl_tmp").glob("checkpoint-*")) == checkpoints


def test_final_line_names_the_metric(run_dir):
    from k2rl.run.outputs import final_line

    line = final_line(0.5, 0.75, 3, run_dir, "exact_answer")
    assert line == f"k2rl: eval accuracy before=0.500 after=0.750 delta=+25.0pts wall=3s run_dir={run_dir} metric=exact_answer"


def test_a_preset_recipe_needs_a_model(request, capsys):
    recipe = request.config.rootpath / "configs" / "quickstart.yaml"
    assert main(["eval", str(recipe)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"k2rl: error: {recipe}: policy.preset 'k2-tiny' has no trained weights to evaluate; "
        "pass --model PATH (or a run directory)")


def test_breakdown_by_column_and_pass_at_k(tiny_policy_dir):
    policy = load_policy(str(tiny_policy_dir))
    rows = Dataset.from_list([{"prompt": [{"role": "user", "content": f"What is {i} + 1?"}], "answer": str(i + 1),
                               "task": "easy" if i % 4 else "hard"} for i in range(8)])

    def easy_only(prompts, completions, task, **kwargs):  # scores by the column, whatever the model wrote
        return [1.0 if t == "easy" else (None if i == 0 else 0.5) for i, t in enumerate(task)]

    report = evaluate(policy.model, policy.tokenizer, rows, [("easy_only", easy_only)],
                      EvalConfig(max_new_tokens=2, batch_size=4, k=2, by="task"), seed=0)
    assert report["metric"] == "easy_only" and report["rows"] == 8 and report["accuracy"] == 6 / 8
    assert report["rewards"]["easy_only"] == {"mean": (6 + 0.5) / 8, "solved": 6 / 8, "pass@2": 6 / 8, "unscored": 1}
    by = report["by"]["task"]
    assert by["easy"]["rows"] == 6 and by["easy"]["rewards"]["easy_only"]["solved"] == 1.0
    assert by["hard"]["rewards"]["easy_only"] == {"mean": 0.25, "solved": 0.0, "pass@2": 0.0, "unscored": 1}
    flat = flat_metrics(report)  # what metrics.jsonl and summary.json carry per group
    assert flat["task=easy/easy_only/solved"] == 1.0 and flat["task=hard/easy_only/mean"] == 0.25
    before = {**flat, "task=easy/easy_only/solved": 0.5}
    assert by_line(before, flat, "easy_only") == "held-out by task (easy_only solved): easy 0.500 -> 1.000; hard 0.000 -> 0.000"


def test_eval_rewards_default_to_the_recipes_minus_rubric(request):
    from k2rl.run.eval_rewards import eval_reward_specs

    root = request.config.rootpath / "configs"
    assert [label for label, _ in eval_reward_specs(load_config(root / "rubric_mix.yaml"))] == ["exact_answer"]
    chosen = eval_reward_specs(load_config(root / "quickstart.yaml", [
        "rewards=[{name: exact_answer, label: gold, options: {column: answer}}, {name: format}]", "eval.rewards=[format, gold]"]))
    assert [(label, spec.name, spec.options) for label, spec in chosen] == [
        ("format", "format", {}), ("gold", "exact_answer", {"column": "answer"})]
    with pytest.raises(K2RLError, match="eval.rewards: rubric compares the completions of a group"):
        eval_reward_specs(load_config(root / "rubric_mix.yaml", ["eval.rewards=[rubric]"]))


def test_evaluation_calls_rewards_as_training_does(tiny_policy_dir):
    """Chat-format completions after a chat prompt, their token ids, every column: the training convention."""
    from k2rl.rewards.isolation import isolate

    seen = {}

    def recording(prompts, completions, completion_ids=None, **kwargs):
        seen.update(prompts=prompts, completions=completions, completion_ids=completion_ids, kwargs=kwargs)
        return [0.0] * len(completions)

    policy = load_policy(str(tiny_policy_dir))
    rows = Dataset.from_list([{"prompt": [{"role": "user", "content": "What is 1 + 1?"}], "answer": "2", "task": "t"}])
    evaluate(policy.model, policy.tokenizer, rows, [("rec", isolate(recording, "rec"))],
             EvalConfig(max_new_tokens=4, batch_size=1))
    (completion,) = seen["completions"]
    assert isinstance(completion, list) and completion[0]["role"] == "assistant"
    (ids,) = seen["completion_ids"]
    assert ids == policy.tokenizer(completion[0]["content"], add_special_tokens=False)["input_ids"]
    assert seen["kwargs"] == {"answer": ["2"], "task": ["t"]}
