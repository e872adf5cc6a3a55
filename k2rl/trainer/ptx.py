"""PTX: a language-modelling loss on curated data, mixed into the RL loss against forgetting.

RL on one task moves the policy away from everything else it knew. The PTX term (InstructGPT's name,
used by Kimi K2's RL stage) keeps a likelihood loss on a curated set in the objective:
``loss = rl_loss + weight * lm_loss(curated batch)``.

The curated set is either the task's own warm-start pairs (``source: sft``; the loss is on the
answer tokens only) or any text dataset with a text column (JSONL, Parquet, HF id; loss on all
tokens). Batches are drawn endlessly in a seeded shuffled order.
"""

from __future__ import annotations

import random

import torch
from datasets import Dataset

from k2rl.config import PtxConfig
from k2rl.data.sources import _load_source as load_source  # the same loader as the task data
from k2rl.data.sources import sft_dataset
from k2rl.errors import K2RLError
from k2rl.trainer.losses import lm_loss


def _sft_examples(train: Dataset, tokenizer, max_length: int) -> list[tuple[list[int], list[int]]]:
    examples = []
    for row in sft_dataset(train):
        encoded = tokenizer.apply_chat_template(
            row["prompt"] + row["completion"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        examples.append((encoded["input_ids"][:max_length], encoded["assistant_masks"][:max_length]))
    return examples


def _text_examples(config: PtxConfig, tokenizer) -> list[tuple[list[int], list[int]]]:
    dataset = load_source(config.source, config.split)
    if config.text_column not in dataset.column_names:
        raise K2RLError(
            f"trainer.ptx: dataset {config.source!r} has no column {config.text_column!r} "
            f"(available: {', '.join(dataset.column_names)}); set trainer.ptx.text_column"
        )
    examples = []
    for text in dataset[config.text_column]:
        ids = tokenizer(str(text), add_special_tokens=False)["input_ids"][: config.max_length]
        examples.append((ids, [1] * len(ids)))
    return examples


class PtxBatches:
    """Endless batches of (input_ids, attention_mask, loss_mask) from the curated set."""

    def __init__(self, examples: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int, seed: int):
        examples = [e for e in examples if sum(e[1][1:]) > 0]  # a row must have a token to predict
        if not examples:
            raise K2RLError("trainer.ptx: the curated dataset has no usable rows")
        self.examples, self.pad_id, self.batch_size = examples, pad_id, batch_size
        self.rng = random.Random(seed)
        self.order: list[int] = []

    def next(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = []
        while len(rows) < self.batch_size:
            if not self.order:
                self.order = list(range(len(self.examples)))
                self.rng.shuffle(self.order)
            rows.append(self.examples[self.order.pop()])
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        loss_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, mask) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            loss_mask[i, : len(ids)] = torch.tensor(mask)
        return input_ids.to(device), attention.to(device), loss_mask.to(device)


def build_ptx_batches(config: PtxConfig, train: Dataset, tokenizer, seed: int) -> PtxBatches | None:
    """The PTX batch source for a recipe, or None when PTX is off (weight 0)."""
    if config.weight < 0:
        raise K2RLError(f"trainer.ptx.weight must be >= 0, got {config.weight}")
    if config.weight == 0:
        return None
    if config.source == "sft":
        examples = _sft_examples(train, tokenizer, config.max_length)
    else:
        examples = _text_examples(config, tokenizer)
    return PtxBatches(examples, tokenizer.pad_token_id, config.batch_size, seed)


def ptx_lm_loss(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Next-token negative log-likelihood (temperature 1) on the ``loss_mask`` tokens of a batch."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return lm_loss(logps, loss_mask[:, 1:] * attention_mask[:, 1:])


class PtxLoss:
    """``weight * lm_loss`` on the next curated batch: an auxiliary loss for K2GRPOTrainer."""

    name = "ptx_loss"

    def __init__(self, batches: PtxBatches, weight: float):
        self.batches, self.weight = batches, weight

    def __call__(self, model) -> torch.Tensor:
        device = next(p for p in model.parameters()).device
        return self.weight * ptx_lm_loss(model, *self.batches.next(device))
