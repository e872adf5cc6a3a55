"""The warm start on multi-turn demonstrations trains the policy's own turns only, as RL does."""

import json

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
