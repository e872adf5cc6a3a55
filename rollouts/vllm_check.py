"""Checked, not assumed: does the vLLM engine sample from the policy being trained?

The engine scores its own sampled tokens (log-probabilities after temperature scaling); the policy
scores the same tokens with its adapters folded in. The largest gap is the run's evidence that the
engine computes the policy: a wrong dtype, a tensor that never reached the engine, or a kernel that
computes something else all show up here, on the tokens training will actually use.
"""

from __future__ import annotations

import torch

from k2rl.errors import K2RLError
from k2rl.experts.lora import merged_expert_adapters
from k2rl.rollouts.backends import Sampling


@torch.no_grad()
def policy_logprobs(model, prompt: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    """The policy's log-probability of each ``completion`` token after ``prompt`` (temperature-scaled)."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt + completion], device=device)
    logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float()
    if temperature > 0:
        logits = logits / temperature
    return logits.log_softmax(-1).gather(-1, torch.tensor(completion, device=device)[:, None])[:, 0].cpu()


@torch.no_grad()
def logprob_gap(backend, model, prompts: list[list[int]], max_new_tokens: int, temperature: float = 1.0) -> float:
    """Largest |vLLM - policy| log-probability over the tokens vLLM samples for ``prompts``."""
    outputs = backend.generate(prompts, [max_new_tokens] * len(prompts), Sampling(temperature=temperature))
    gap = 0.0
    with merged_expert_adapters(model):
        for prompt, (ids, logprobs) in zip(prompts, outputs, strict=True):
            if ids:
                reference = policy_logprobs(model, prompt, ids, temperature if temperature > 0 else 1.0)
                gap = max(gap, (torch.tensor(logprobs) - reference).abs().max().item())
    return gap


def likely_cause(gap: float, threshold: float, engine_info: dict, pushes: int, first_gap: float | None) -> str:
    """One line: why vLLM and the policy disagree by ``gap`` (above ``threshold``)."""
    if engine_info.get("dtype") not in (None, "torch.float32", "float32"):
        cause = f"dtype: the engine runs in {engine_info['dtype']}, the policy in float32"
    elif first_gap is not None and first_gap <= threshold and pushes:
        cause = "unsynced tensor: the engine matched before training, so a weight the trainer changes does not reach it"
    else:
        cause = ("kernel or config: the engine computes another function of the same weights "
                 "(a config field vLLM reads differently, or a CPU kernel; see README 'vLLM backend')")
    return (f"vLLM's log-probabilities differ from the policy's by {gap:.3g} (rollout.vllm_check_threshold "
            f"{threshold:g}); likely cause: {cause}")


def refuse(gap: float, threshold: float, engine_info: dict, pushes: int, first_gap: float | None) -> None:
    if gap > threshold:
        raise K2RLError(likely_cause(gap, threshold, engine_info, pushes, first_gap))
