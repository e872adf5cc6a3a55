"""The warm start on multi-turn demonstrations trains the policy's own turns only, as RL does."""

import json

from datasets import Dataset

from transformers import AutoModelForCausalLM, AutoTokenizer

from k2rl.config import DataConfig, WarmStartConfig
from k2rl.data.sources import load_task_data
from k2rl.trainer.warm_start import warm_start_trainer


def _first_batch(tiny_policy_dir, tmp_path, data_options):
    data = load_task_data(DataConfig(source="tool_use", train_size=8, eval_size=2, options=data_options), seed=0)
    model = AutoModelForCausalLM.from_pretrained(tiny_policy_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_policy_dir)
    trainer = warm_start_trainer(model, tokenizer, data.train, WarmStartConfig(max_steps=1, batch_size=8), tmp_path, seed=0)
    batch = next(iter(trainer.get_train_dataloader()))
    return tokenizer, data.train, batch


def _trained_text(tokenizer, ids, labels) -> str:
    return tokenizer.decode([i for i, label in zip(ids.tolist(), labels.tolist()) if label != -100])


def test_tool_results_are_context_not_targets(tiny_policy_dir, tmp_path):
    tokenizer, train, batch = _first_batch(tiny_policy_dir, tmp_path, {"tool_fraction": 1.0, "named": True})
    trained = [_trained_text(tokenizer, ids, labels) for ids, labels in zip(batch["input_ids"], batch["labels"])]
    results = {m["content"].strip() for row in train for m in json.loads(row["demonstration_messages"]) if m["role"] == "tool"}
    assert len(trained) == 8 and results
    for text in trained:
        assert "print(" in text and "The answer is" in text  # the calls and the answer are trained
        assert "Return of" not in text and "<|im_system|>" not in text  # the tool's message is not
        # each product appears once (the answer), not twice (the tool's output too)
        answers = [r for r in results if r in text]
        assert answers and all(text.count(r) == 1 for r in answers)


def test_single_turn_demonstrations_train_the_whole_completion(tiny_policy_dir, tmp_path):
    tokenizer, train, batch = _first_batch(tiny_policy_dir, tmp_path, {"tool_fraction": 0.0})
    trained = [_trained_text(tokenizer, ids, labels) for ids, labels in zip(batch["input_ids"], batch["labels"])]
    assert all(text.startswith("The answer is") and text.endswith("<|im_end|>") for text in trained)


def test_answer_drills_train_the_answer_after_the_tool_result_and_not_the_first_turn(tiny_policy_dir, tmp_path):
    data = load_task_data(DataConfig(source="tool_use", train_size=8, eval_size=2,
                                     options={"tool_fraction": 0.5, "named": True}), seed=0)
    model = AutoModelForCausalLM.from_pretrained(tiny_policy_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_policy_dir)
    tool_rows = sum(bool(r) for r in data.train["demonstration_messages"])
    critic_like = Dataset.from_list([{"prompt": [{"role": "user", "content": "Which is better?"}],
                                      "completion": [{"role": "assistant", "content": "A"}]}])  # extra rows join them
    trainer = warm_start_trainer(model, tokenizer, data.train, WarmStartConfig(max_steps=1, answer_drills=2), tmp_path,
                                 seed=0, extra_rows=critic_like)
    rows = trainer.train_dataset
    assert 0 < tool_rows < 8 and len(rows) == 8 + 2 * tool_rows + 1
    trained = [tokenizer.decode([i for i in row["labels"] if i != -100]) for row in rows]
    drills = [t for row, t in zip(rows, trained) if "Return of" in tokenizer.decode(row["input_ids"])
              and "<|tool_calls_section_begin|>" not in t]
    assert len(drills) == 2 * tool_rows
    assert all(t.startswith("The answer is") and t.endswith("<|im_end|>") for t in drills)


def test_negative_answer_drills_are_refused_before_any_work(tmp_path, request, capsys):
    from k2rl.cli import main

    recipe = request.config.rootpath / "configs" / "tool_use.yaml"
    assert main(["train", str(recipe), f"output_dir={tmp_path}", "warm_start.answer_drills=-1"]) != 0
    assert "warm_start.answer_drills must be at least 0, got -1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
