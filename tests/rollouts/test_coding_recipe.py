"""configs/coding.yaml end to end on CPU (a few steps): unit-test rewards from the sandbox, per-step cost
figures in metrics.jsonl, held-out figures per split."""

import json

from k2rl.cli import main
from k2rl.data.coding import coding_splits
from k2rl.sandboxes import get_sandbox

SMALL = ["data.train_size=16", "data.eval_size=4", "warm_start.max_steps=2", "trainer.max_steps=2",
         "trainer.per_device_train_batch_size=4", "trainer.num_generations=2", "trainer.eval_steps=0",
         "trainer.logging_steps=1"]


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_builtin_coding_items_pass_their_own_hidden_tests():
    train, held_out = coding_splits(8, 8, seed=0)
    assert not set(train["question"]) & set(held_out["question"])
    with get_sandbox("local", workers=2) as sandbox:
        for row in list(train) + list(held_out):
            code = row["answer"].removeprefix("```python\n").removesuffix("```")
            assert sandbox.run_tests(code, row["tests"]).passed, row["question"]
            assert not sandbox.run_tests("def nothing():\n    pass\n", row["tests"]).passed


def test_coding_recipe_logs_step_costs_and_held_out_splits(tmp_path, request):
    recipe = request.config.rootpath / "configs" / "coding.yaml"
    assert main(["train", str(recipe), f"output_dir={tmp_path}", "run_name=coding", *SMALL,
                 "trainer.max_completion_length=24", "eval.max_new_tokens=8"]) == 0
    run = tmp_path / "coding"
    rl = [r for r in records(run) if r["phase"] == "rl" and "loss" in r]
    assert len(rl) == 2
    for record in rl:
        for key in ("generation_s", "rewards_s", "update_s", "step_s", "rollout_wall_s"):
            assert record[f"cost/{key}"] >= 0.0, key
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["step_cost"]["share"]) >= {"generation", "rewards", "update"}
    for when in ("eval_before", "eval_after"):
        assert {"heldout=new_constants/unit_tests/solved", "heldout=new_combinations/unit_tests/solved"} <= set(
            summary[when])
