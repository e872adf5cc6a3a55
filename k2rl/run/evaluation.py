"""Held-out accuracy under greedy decoding: the number a run is judged by.

Accuracy is the share of held-out prompts whose greedy completion earns the full score of a
correctness reward (``exact_answer`` unless the recipe names another). Generation is batched with
left padding, the layout ``generate`` expects for decoder-only models.
"""

from __future__ import annotations

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import TrainerCallback

from k2rl.experts.lora import merged_expert_adapters
from k2rl.rewards import get_reward

EVAL_REWARD = "exact_answer"


@torch.no_grad()
def greedy_completions(
    model, tokenizer, prompts: list, max_new_tokens: int, batch_size: int, desc: str = "", prefix: str = "",
    temperature: float | None = None,
) -> list[str]:
    """Greedy completions for chat ``prompts`` (lists of messages), each continuing the assistant turn after ``prefix``
    (``temperature``: sampled at that temperature instead, from torch's global generator)."""
    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    batches = range(0, len(prompts), batch_size)
    for start in tqdm(batches, desc=desc or "greedy eval", leave=False, disable=len(batches) < 2):
        chunk = prompts[start : start + batch_size]
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) + prefix for p in chunk]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        generated = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=temperature is not None,
            **({"temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature is not None else {}),
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = generated[:, enc["input_ids"].shape[1] :]
        outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    if was_training:
        model.train()
    return outputs


def heldout_accuracy(
    model, tokenizer, dataset: Dataset, reward_name: str = "exact_answer", max_new_tokens: int = 16, batch_size: int = 64
) -> float:
    """Share of ``dataset`` rows whose greedy completion gets the full reward (>= 1)."""
    prompts = list(dataset["prompt"])
    completions = greedy_completions(model, tokenizer, prompts, max_new_tokens, batch_size)
    columns = {k: list(dataset[k]) for k in dataset.column_names if k != "prompt"}
    scores = get_reward(reward_name)(prompts=prompts, completions=completions, **columns)
    return sum(full_scores(scores)) / max(len(scores), 1)


def full_scores(scores) -> list[bool]:
    """Which scores are a pass: the full score (>= 1) of a correctness reward; a failed score (None) is not."""
    return [s is not None and s >= 1.0 for s in scores]


class HeldOutEvalCallback(TrainerCallback):
    """Greedy held-out accuracy every ``every`` RL steps (and on demand), written to the metrics log."""

    def __init__(self, tokenizer, dataset, log, every: int, eval_config):
        self.tokenizer, self.dataset, self.log, self.every, self.eval_config = tokenizer, dataset, log, every, eval_config

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            self.log.write("eval", state.global_step, accuracy=self.measure(model))

    def measure(self, model) -> float:
        with merged_expert_adapters(model):
            return heldout_accuracy(
                model,
                self.tokenizer,
                self.dataset,
                reward_name=EVAL_REWARD,
                max_new_tokens=self.eval_config.max_new_tokens,
                batch_size=self.eval_config.batch_size,
            )

    def before_rl(self, model) -> float:
        """Accuracy at step 0: measured now, or read back from the log of a resumed run."""
        measured = [r["accuracy"] for r in self.log.records() if r["phase"] == "eval" and r["step"] == 0]
        if measured:
            return measured[0]
        accuracy = self.measure(model)
        self.log.write("eval", 0, accuracy=accuracy)
        return accuracy
