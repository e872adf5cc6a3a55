"""A tiny policy that really emits Kimi K2 tool calls: the session's tiny K2 model fine-tuned, for a
few seconds, to recite two short tool-using conversations (one well-formed call, one malformed).

Tests of the tool loop then drive the engine with a real policy and a real sandbox, under greedy
decoding, instead of a scripted generator.
"""

from __future__ import annotations

import pytest
import torch

from rollout_support import conversations


@pytest.fixture(scope="session")
def tool_policy(tiny_policy_dir):
    """``(model, tokenizer)``: greedy decoding reproduces the two conversations' assistant turns."""
    from k2rl.policy.build import load_policy

    torch.manual_seed(0)
    policy = load_policy(str(tiny_policy_dir))
    model, tokenizer = policy.model, policy.tokenizer
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations()]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(150):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if loss.item() < 0.05:
            break
    model.eval()
    return model, tokenizer
