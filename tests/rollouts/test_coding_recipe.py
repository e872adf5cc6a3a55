"""configs/coding.yaml end to end on CPU: rollout engine with the sandboxed python tool, partial
rollouts and overlapped unit-test scoring inside `k2rl train`."""

import json

from k2rl.cli import main
from k2rl.data.coding import coding_splits
from k2rl.sandboxes import get_sandbox


def test_builtin_coding_items_pass_their_own_hidden_tests():
    train, held_out = coding_splits(8, 8, seed=0)
    assert not set(train["question"]) & set(held_out["question"])
    with get_sandbox("local", workers=2) as sandbox:
        for row in list(train) + list(held_out):
            code = row["answer"].removeprefix("```python\n").removesuffix("```")
            assert sandbox.run_tests(code, row["tests"]).passed, row["question"]
            assert not sandbox.run_tests("def nothing():\n    pass\n", row["tests"]).passed


def test_coding_recipe_runs_end_to_end(tmp_path, request):
    recipe = request.config.rootpath / "configs" / "coding.yaml"
    code = main(["train", str(recipe), f"output_dir={tmp_path}", "run_name=coding", "data.train_size=16",
                 "data.eval_size=2", "trainer.max_steps=2", "trainer.per_device_train_batch_size=4",
                 "trainer.num_generations=2", "trainer.max_completion_length=24", "rollout.token_budget=24",
                 "rollout.iteration_budget=16", "eval.max_new_tokens=4"])
    assert code == 0
    run = tmp_path / "coding"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in records if r["phase"] == "rl" and "rollouts/paused_groups" in r]
    assert len(rl) == 2
    assert rl[0]["rollouts/paused_groups"] == 2  # 24-token rollouts, 16 tokens per iteration
    assert (run / "adapter").is_dir()
