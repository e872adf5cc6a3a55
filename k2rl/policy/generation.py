"""Plain generation with the policy (greedy or sampled, batched, chat prompts): what held-out evaluation,
the difficulty filter and the rubric critic share.

It lives with the policy, below every package that generates, so the critic and the run phases both
import it without importing each other.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


def greedy_completions(
    model, tokenizer, prompts: list, max_new_tokens: int, batch_size: int, desc: str = "", prefix: str = "",
) -> list[str]:
    """Greedy completions for chat ``prompts`` (lists of messages), each continuing the assistant turn after ``prefix``."""
    return _completions(model, tokenizer, prompts, max_new_tokens, batch_size, desc or "greedy eval", prefix, do_sample=False)


def sampled_completions(
    model, tokenizer, prompts: list, max_new_tokens: int, batch_size: int, k: int, temperature: float, seed: int
) -> list[list[str]]:
    """``k`` sampled completions per prompt, drawn from their own seeded generator state (training's is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        flat = _completions(model, tokenizer, prompts, max_new_tokens, max(batch_size // k, 1), f"pass@{k} eval", "",
                            do_sample=True, temperature=temperature, top_p=1.0, top_k=0, num_return_sequences=k)
    return [flat[i * k : (i + 1) * k] for i in range(len(prompts))]


@torch.no_grad()
def _completions(model, tokenizer, prompts: list, max_new_tokens: int, batch_size: int, desc: str, prefix: str,
                 **sampling) -> list[str]:
    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"
    outputs: list[str] = []
    batches = range(0, len(prompts), batch_size)
    for start in tqdm(batches, desc=desc, leave=False, disable=len(batches) < 2):
        chunk = prompts[start : start + batch_size]
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) + prefix for p in chunk]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        generated = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            **sampling,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = generated[:, enc["input_ids"].shape[1] :]
        outputs.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    if was_training:
        model.train()
    return outputs
