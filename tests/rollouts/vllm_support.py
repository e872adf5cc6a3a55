"""Tiny MoE policies for the vLLM backend's tests, and the skip rule when no vLLM environment is built.

Widths follow what vLLM's CPU kernels take (head sizes of 32, hidden 128); the initial weights are
spread wider than transformers' default so a random model's next-token distributions are peaked and
greedy decoding has no near-ties to break differently in two implementations.
"""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

from k2rl.experts.lora import expert_lora_config
from k2rl.policy.build import DEEPSEEK_ROUTING
from k2rl.rollouts.vllm_engine import vllm_python

VLLM_PYTHON = vllm_python()
needs_vllm = pytest.mark.skipif(
    VLLM_PYTHON is None, reason="no vLLM environment (.venv-vllm or K2RL_VLLM_PYTHON); scripts/setup.sh builds it")

COMMON = dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=256,
              tie_word_embeddings=False, initializer_range=0.1)
SHAPES = {
    "deepseek_v3": dict(**DEEPSEEK_ROUTING, intermediate_size=256, moe_intermediate_size=48, first_k_dense_replace=1,
                        num_key_value_heads=4, q_lora_rank=64, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16,
                        v_head_dim=32, n_routed_experts=16, num_experts_per_tok=2, n_shared_experts=1, n_group=1,
                        topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.827),
    # DeepSeek's MLA latent width (512 + 64 = 576): vLLM's CPU MLA kernel runs it (no VLLM_MLA_DISABLE)
    "deepseek_v3_mla576": dict(**DEEPSEEK_ROUTING, intermediate_size=256, moe_intermediate_size=48, first_k_dense_replace=1,
                               num_key_value_heads=4, q_lora_rank=64, kv_lora_rank=512, qk_nope_head_dim=16,
                               qk_rope_head_dim=64, v_head_dim=32, n_routed_experts=16, num_experts_per_tok=2,
                               n_shared_experts=1, n_group=1, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.827),
    "qwen3_moe": dict(intermediate_size=256, moe_intermediate_size=48, num_key_value_heads=2, head_dim=32,
                      num_experts=16, num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[0], norm_topk_prob=True),
    "mixtral": dict(intermediate_size=48, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2),
}
TARGETS = {"deepseek_v3": ["routed_experts", "shared_experts"], "deepseek_v3_mla576": ["routed_experts", "shared_experts"], "qwen3_moe": ["routed_experts"], "mixtral": ["routed_experts"]}


def tiny_policy(kind: str, tokenizer, seed: int = 0):
    """A random ``kind`` model with LoRA on its experts (B at zero, as training starts)."""
    config = AutoConfig.for_model(kind.split("_mla")[0], vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  **COMMON, **SHAPES[kind])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # a trained router's score-correction bias is not zero; make the engine need it
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buffer.copy_(torch.randn_like(buffer) * 0.3)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return get_peft_model(model, expert_lora_config(model, TARGETS[kind], r=4, alpha=8)).eval()


def optimizer_step(policy, tokenizer, lr: float = 0.05) -> None:
    """One AdamW step on a language-modelling loss: every adapter's factors move."""
    batch = tokenizer(["What is 3 + 4? The answer is 7.", "Sam has 12 pens and loses 5."], return_tensors="pt",
                      padding=True, add_special_tokens=False)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr)
    policy.train()
    policy(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)).loss.backward()
    optimizer.step()
    policy.eval()
