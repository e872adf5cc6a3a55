"""Do updated expert adapters reach vLLM? The weights to push for fused MoE experts, and a GPU check.

transformers stores a MoE layer's routed experts fused: ``mlp.experts.gate_up_proj`` (experts x
2*inter x hidden, gate rows first) and ``mlp.experts.down_proj`` (experts x hidden x inter); k2rl's
LoRA adapts exactly these tensors (:mod:`k2rl.experts.lora`). A vLLM DeepSeek-V3/Kimi-K2 model
loads per-expert checkpoint tensors (``mlp.experts.{e}.gate_proj.weight`` ...). When the policy
syncs to vLLM, each expert must arrive as *base + its own LoRA delta*, split on the right axis; a
wrong split or a skipped merge still "loads", and generation silently samples from the wrong policy.

- :func:`merged_expert_tensors` / :func:`per_expert_weights`: the tensors to push, testable on CPU
  against the adapted model's own expert computation (tests/rollouts/test_vllm_sync.py).
- :func:`check_vllm_matches_policy`: on a GPU box with vLLM, after TRL's ``sync_weights``, compares
  vLLM's log-probabilities of its own greedy tokens with the training model's. **Not run in this
  repository's CPU environment** (no GPU, vLLM not installable); it is code to run there.
"""

from __future__ import annotations

import torch

from k2rl.experts.lora import merged_expert_adapters

FUSED = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")


def checkpoint_name(peft_name: str) -> str:
    """A PEFT-wrapped parameter's name in the base checkpoint (the naming TRL's vLLM sync uses)."""
    return peft_name.removeprefix("base_model.model.").replace(".base_layer", "")


@torch.no_grad()
def merged_expert_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every fused routed-expert tensor with its adapter folded in, by checkpoint name (copies)."""
    with merged_expert_adapters(model):
        return {checkpoint_name(name): param.detach().clone() for name, param in model.named_parameters()
                if checkpoint_name(name).endswith(FUSED)}


def per_expert_weights(name: str, fused: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Split one fused tensor into the per-expert ``nn.Linear`` weights a DeepSeek-V3 checkpoint has."""
    prefix = name.rsplit(".", 1)[0]  # ...mlp.experts
    out = []
    for expert, weight in enumerate(fused):
        if name.endswith("gate_up_proj"):
            gate, up = weight.chunk(2, dim=0)
            out += [(f"{prefix}.{expert}.gate_proj.weight", gate), (f"{prefix}.{expert}.up_proj.weight", up)]
        else:
            out.append((f"{prefix}.{expert}.down_proj.weight", weight))
    return out


@torch.no_grad()
def check_vllm_matches_policy(trainer, prompt_ids: list[list[int]], atol: float = 0.05) -> dict:
    """GPU only. After ``trainer.vllm_generation.sync_weights()``, vLLM must score its greedy tokens
    like the adapted policy does, and measurably unlike the base model (so the check can fail).

    Returns ``{"max_diff_policy": ..., "max_diff_base": ...}``; raises AssertionError on a mismatch.
    """
    trainer.vllm_generation.sync_weights()
    vllm = trainer.vllm_generation
    saved = vllm.temperature
    vllm.temperature = 0.0
    try:
        _, completions, logprobs, _ = vllm.generate(prompts=prompt_ids, images=None, num_generations=1)
    finally:
        vllm.temperature = saved
    model = trainer.accelerator.unwrap_model(trainer.model)

    def policy_logprobs(adapters: bool) -> list[torch.Tensor]:
        out = []
        for prompt, completion in zip(prompt_ids, completions, strict=True):
            ids = torch.tensor([prompt + list(completion)], device=trainer.accelerator.device)
            if adapters:
                with merged_expert_adapters(model):
                    logits = model(input_ids=ids).logits
            else:
                with model.disable_adapter():
                    logits = model(input_ids=ids).logits
            logps = logits[0, len(prompt) - 1:-1].float().log_softmax(-1)
            out.append(logps.gather(-1, torch.tensor(list(completion), device=logps.device)[:, None])[:, 0])
        return out

    sampled = [torch.tensor([lp[0] for lp in seq]) for seq in logprobs]
    diffs = {}
    for key, adapters in (("max_diff_policy", True), ("max_diff_base", False)):
        diffs[key] = max((a.cpu() - b).abs().max().item() for a, b in zip(policy_logprobs(adapters), sampled))
    assert diffs["max_diff_policy"] <= atol, f"vLLM does not sample from the adapted policy: {diffs}"
    assert diffs["max_diff_base"] > diffs["max_diff_policy"], f"the adapters made no difference: {diffs}"
    return diffs
