"""Can k2-tiny learn to answer with the number the tool printed, and what the warm-start loss covers
changes that: supervised steps on tool_use demonstrations (one call, "The answer is N."), with the loss
on the assistant's turns only (what k2rl's warm start does for multi-turn demonstrations) against the
loss on the whole completion, the tool's printed result included (TRL's completion-only loss), from
the same initial policy and batches in one run.

Every few steps it prints, for held-out problems whose calls and result are given, the share of
answers whose digits are all predicted right (teacher-forced, so greedy decoding copies them) and each
answer digit's accuracy (chance is about 0.1), then the ratio of the two arms' whole-answer shares.

    python benchmarks/tool_use_copy.py [--steps 400] [--digits 6] [--lr 3e-3] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time

import torch
from transformers import AutoModelForCausalLM

from k2rl.data.tool_use import ANSWER_FORMAT, tool_call
from k2rl.policy.build import init_policy
from k2rl.policy.tokenizer import build_tokenizer

FACTORS = {6: (400, 999), 4: (32, 99)}  # factor ranges whose products have a fixed number of digits


def _example(tokenizer, rng: random.Random, digits: int) -> tuple[list[int], list[int], list[int], str]:
    """(token ids, assistant mask, completion mask, answer) of one tool demonstration."""
    a, b = (rng.randint(*FACTORS[digits]) for _ in range(2))
    question = [{"role": "user", "content": f"a = {a}, b = {b}. What is a * b?"}]
    call = tool_call("print(a * b)", 0)
    completion = [{"role": "assistant", "content": "", "tool_calls": [call]},
                  {"role": "tool", "tool_call_id": call["id"], "content": f"{a * b}\n"},
                  {"role": "assistant", "content": ANSWER_FORMAT.format(answer=a * b)}]
    encoded = tokenizer.apply_chat_template(question + completion, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    prompt = len(tokenizer.apply_chat_template(question, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])
    ids = encoded["input_ids"]
    return ids, encoded["assistant_masks"], [0] * prompt + [1] * (len(ids) - prompt), str(a * b)


def _batch(examples, pad: int, mask_index: int):
    length = max(len(e[0]) for e in examples)
    ids = torch.full((len(examples), length), pad)
    labels = torch.full((len(examples), length), -100)
    attention = torch.zeros(len(examples), length, dtype=torch.long)
    for i, example in enumerate(examples):
        row = torch.tensor(example[0])
        ids[i, :len(row)], attention[i, :len(row)] = row, 1
        labels[i, :len(row)] = torch.where(torch.tensor(example[mask_index]) == 1, row, -100)
    return ids, attention, labels


@torch.no_grad()
def _copy_accuracy(model, tokenizer, held_out) -> tuple[float, list[float]]:
    model.eval()
    whole, per_digit = 0, [0] * len(held_out[0][3])
    for ids, _, _, answer in held_out:
        predicted = model(input_ids=torch.tensor([ids])).logits[0].argmax(-1)
        start = len(ids) - len(answer) - 2  # the answer's digits, then "." and <|im_end|>
        assert tokenizer.decode(ids[start:start + len(answer)]) == answer
        hits = [tokenizer.decode([predicted[start + k - 1]]) == digit for k, digit in enumerate(answer)]
        whole += all(hits)
        per_digit = [n + h for n, h in zip(per_digit, hits, strict=True)]
    model.train()
    return whole / len(held_out), [round(n / len(held_out), 2) for n in per_digit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--digits", type=int, choices=sorted(FACTORS), default=6)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tokenizer = build_tokenizer()
    held_out = [_example(tokenizer, random.Random(f"held-out-{i}"), args.digits) for i in range(64)]
    final = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = init_policy("k2-tiny", f"{tmp}/policy", seed=args.seed)
        for arm, mask_index in (("assistant_turns", 1), ("whole_completion", 2)):
            torch.manual_seed(args.seed)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
            warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 15))
            rng, start = random.Random(f"train-{args.seed}"), time.time()
            for step in range(1, args.steps + 1):
                batch = [_example(tokenizer, rng, args.digits) for _ in range(args.batch)]
                ids, attention, labels = _batch(batch, tokenizer.pad_token_id, mask_index)
                loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step(), warmup.step(), optimizer.zero_grad()
                if step % args.every == 0 or step == args.steps:
                    whole, digits = _copy_accuracy(model, tokenizer, held_out)
                    final[arm] = whole
                    print(json.dumps({"arm": arm, "step": step, "loss": round(loss.item(), 4), "whole_answers": whole,
                                      "digit_accuracy": digits, "wall_s": round(time.time() - start)}), flush=True)
    a, w = final["assistant_turns"], final["whole_completion"]
    ratio = a / w if w else (float("inf") if a else None)  # None: neither arm copies yet
    print(json.dumps({"whole_answers": final, "ratio_assistant_turns_over_whole_completion": ratio}))


if __name__ == "__main__":
    main()
