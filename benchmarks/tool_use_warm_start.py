"""What a warm-started tool_use policy can do, before any RL: the three things the recipe's mechanism
(configs/tool_use.yaml header) needs from the warm start, on held-out questions.

1. ``p_open``: the probability of opening a tool call at the answer's first token (should be near
   ``tool_fraction`` and below one half for every question, so greedy decoding starts by guessing);
2. ``first_call_right`` / ``second_call_right``: forced into the tool path, whether it writes the right
   calls (``print(a * b)``, then ``print(a * r0)``);
3. ``copy_right``: given the right calls and results, whether its answer is the tool's last result,
   and ``digit_accuracy``: teacher-forced accuracy of each answer digit (chance is about 0.1; the last
   digit can be worked out from the factors' last digits, so it says nothing about copying).

Without (3) RL sees reward 0 on every rollout, whatever the call rate.

    python benchmarks/tool_use_warm_start.py runs/<run>/warm_start [--rows 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from k2rl.data.tool_use import _calls, tool_messages, tool_use_splits
from k2rl.rollouts.tool_calls import SECTION_BEGIN, parse_turn


def _greedy(model, tokenizer, text: str, max_new_tokens: int) -> str:
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=False)


def _digit_hits(model, tokenizer, conversation: list[dict], answer: str) -> list[bool]:
    ids = tokenizer(tokenizer.apply_chat_template(conversation, tokenize=False), add_special_tokens=False,
                    return_tensors="pt")["input_ids"]
    predicted = model(input_ids=ids).logits[0].argmax(-1)
    pieces = [tokenizer.decode([i]) for i in ids[0]]
    start = max(i for i, piece in enumerate(pieces) if piece == " is") + 2  # "The answer is " then the digits
    return [tokenizer.decode([predicted[start + k - 1]]) == digit for k, digit in enumerate(answer)]


@torch.no_grad()
def probe(path: str, rows: int, seed: int) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    open_id = tokenizer.convert_tokens_to_ids(SECTION_BEGIN)
    _, held_out = tool_use_splits(3000, rows, seed, named=True)
    p_open, first, second, copies, digits = [], [], [], [], {}
    for row in held_out:
        prompt = [{"role": "user", "content": row["question"]}]
        factors = tuple(json.loads(row["bindings"]).values())
        calls, demo = _calls(factors, named=True), tool_messages(factors, named=True)
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        logits = model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, -1]
        p_open.append(torch.softmax(logits, -1)[open_id].item())
        turn = parse_turn(SECTION_BEGIN + _greedy(model, tokenizer, text + SECTION_BEGIN, 60))
        first.append(bool(turn.calls) and (turn.calls[0].arguments or {}).get("code") == calls[0][0])
        if len(calls) == 2:
            after_first = tokenizer.apply_chat_template(prompt + demo[:2], tokenize=False, add_generation_prompt=True)
            second.append(calls[1][0] in _greedy(model, tokenizer, after_first, 60))
        before_answer = tokenizer.apply_chat_template(prompt + demo[:-1], tokenize=False, add_generation_prompt=True)
        copies.append(demo[-1]["content"] in _greedy(model, tokenizer, before_answer, 20))
        for k, hit in enumerate(_digit_hits(model, tokenizer, prompt + demo, row["answer"])):
            digits.setdefault(k, []).append(hit)

    def share(values):
        return round(sum(values) / len(values), 3) if values else None

    return {"rows": rows, "p_open_mean": share(p_open), "p_open_above_half": share([p > 0.5 for p in p_open]),
            "first_call_right": share(first), "second_call_right": share(second), "copy_right": share(copies),
            "digit_accuracy": [share(digits[k]) for k in sorted(digits)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy", help="a saved policy directory, e.g. runs/<run>/warm_start")
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0, help="the recipe's seed (which held-out rows)")
    args = parser.parse_args()
    print(json.dumps(probe(args.policy, args.rows, args.seed)))


if __name__ == "__main__":
    main()
