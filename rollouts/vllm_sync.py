"""Do updated expert adapters reach vLLM? The weights to push for fused MoE experts, and a GPU check.

transformers stores a MoE layer's routed experts fused (``<moe>.experts.gate_up_proj`` and
``<moe>.experts.down_proj``, :mod:`k2rl.experts.families`); k2rl's LoRA adapts exactly these tensors
(:mod:`k2rl.experts.lora`). vLLM loads a family's *checkpoint* tensors, which for most families are
per expert and named otherwise (DeepSeek/Qwen/OLMoE ``mlp.experts.{e}.gate_proj.weight``, Mixtral
``block_sparse_moe.experts.{e}.w1.weight``, Granite ``input_linear``; gpt-oss keeps them fused). When the
policy syncs to vLLM, each expert must arrive as *base + its own LoRA delta*, split on the right axis;
a wrong split or a skipped merge still "loads", and generation silently samples from the wrong policy.

- :func:`merged_expert_tensors` / :func:`checkpoint_weights`: the tensors to push, in checkpoint
  format by the family's own conversion (transformers' ``revert_weight_conversion``, what
  ``save_pretrained`` writes; transformers 5.24), testable on CPU by loading them back
  (tests/rollouts/test_vllm_sync.py, tests/test_moe_families.py).
- :func:`check_vllm_matches_policy`: on a GPU box with vLLM, after TRL's ``sync_weights``, compares
  vLLM's log-probabilities of its own greedy tokens with the training model's. **Not run in this
  repository's CPU environment** (no GPU, vLLM not installable); it is code to run there.
"""

from __future__ import annotations

import torch
from transformers.core_model_loading import revert_weight_conversion

from k2rl.experts.families import family_of
from k2rl.experts.lora import merged_expert_adapters


def checkpoint_name(peft_name: str) -> str:
    """A PEFT-wrapped parameter's name in the base model (the naming TRL's vLLM sync uses)."""
    return peft_name.removeprefix("base_model.model.").replace(".base_layer", "")


def _base(model: torch.nn.Module) -> torch.nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@torch.no_grad()
def merged_expert_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every fused routed-expert tensor with its adapter folded in, by base-model name (copies)."""
    fused = tuple(family_of(model, "vLLM weight sync").routed_parameters)
    with merged_expert_adapters(model):
        return {checkpoint_name(name): param.detach().clone() for name, param in model.named_parameters()
                if checkpoint_name(name).endswith(fused)}


def checkpoint_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` (base-model names) as the family's checkpoint stores them: per expert where it does."""
    return revert_weight_conversion(_base(model), dict(tensors))


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
