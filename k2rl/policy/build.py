"""K2-family policies: build a tiny one locally, load any checkpoint through ``from_pretrained``.

The tiny preset keeps Kimi K2's architecture (transformers' DeepseekV3 classes: MLA attention with
low-rank query/key-value projections and decoupled RoPE, a dense first layer, many routed experts plus
one shared expert, a sigmoid top-k router with the score-correction bias) and K2's shape ratios where
they survive shrinking: 2 of 96 experts per token (K2: 8 of 384, about 2%), one shared expert, one
dense layer first, a single routing group. Only the widths are small, so CPU runs take minutes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DeepseekV3Config, PreTrainedModel

from k2rl.errors import K2RLError
from k2rl.policy.source import resolve_model_source
from k2rl.policy.precision import policy_dtype
from k2rl.policy.tokenizer import build_tokenizer

# Kimi K2 values, kept by the tiny preset where the ratio still means something.
K2_ROUTED_SCALING_FACTOR = 2.827


# Routing fields real K2/DeepSeek-V3 configs carry and vLLM reads (transformers' DeepseekV3 classes
# hard-code this routing and do not declare them; without them vLLM builds a softmax router with no bias).
DEEPSEEK_ROUTING = {"topk_method": "noaux_tc", "scoring_func": "sigmoid"}


def vllm_config_fields(config: dict) -> dict:
    """Fields to add to a saved ``config.json`` so vLLM builds the same model (none for most families)."""
    if config.get("model_type") in ("deepseek_v3", "kimi_k2"):
        return {k: v for k, v in DEEPSEEK_ROUTING.items() if k not in config}
    return {}


def k2_tiny_config(vocab_size: int, bos_token_id: int, eos_token_id: int, pad_token_id: int, **widths) -> DeepseekV3Config:
    """DeepseekV3Config with K2's layout at a width that trains on two CPU cores (``widths`` override sizes)."""
    sizes = dict(kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=32)
    sizes.update(widths)
    return DeepseekV3Config(
        **DEEPSEEK_ROUTING,
        **sizes,
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,  # the dense first layer's MLP
        moe_intermediate_size=48,
        num_hidden_layers=3,
        first_k_dense_replace=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        q_lora_rank=64,
        n_routed_experts=96,
        num_experts_per_tok=2,
        n_shared_experts=1,
        n_group=1,
        topk_group=1,
        norm_topk_prob=True,
        routed_scaling_factor=K2_ROUTED_SCALING_FACTOR,
        max_position_embeddings=512,
        num_nextn_predict_layers=0,
        tie_word_embeddings=False,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )


def k2_tiny_mla576_config(vocab_size: int, bos_token_id: int, eos_token_id: int, pad_token_id: int) -> DeepseekV3Config:
    """k2-tiny with DeepSeek's MLA latent width (kv_lora_rank 512 + rope 64 = 576), the only one vLLM's
    CPU MLA kernel runs; k2-tiny itself runs in vLLM with MLA disabled (``VLLM_MLA_DISABLE=1``)."""
    return k2_tiny_config(vocab_size, bos_token_id, eos_token_id, pad_token_id, kv_lora_rank=512, qk_rope_head_dim=64)


PRESETS = {"k2-tiny": k2_tiny_config, "k2-tiny-mla576": k2_tiny_mla576_config}


@dataclass
class Policy:
    """A policy is just a ``transformers`` causal LM and its tokenizer."""

    model: PreTrainedModel
    tokenizer: object


def init_policy(preset: str, out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build a randomly initialised policy from ``preset`` and save model + tokenizer to ``out_dir``."""
    if preset not in PRESETS:
        raise K2RLError(f"unknown policy preset {preset!r} (known: {', '.join(sorted(PRESETS))})")
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    config = PRESETS[preset](
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _kimi_k2_as_deepseek_v3(path: Path) -> DeepseekV3Config | None:
    """Kimi-K2 checkpoints declare ``model_type: kimi_k2`` with remote code; the architecture is DeepSeek-V3.

    Reading the config ourselves lets them load through transformers' own classes, with no
    ``trust_remote_code``.
    """
    config_file = path / "config.json"
    if not config_file.is_file():
        return None
    raw = json.loads(config_file.read_text())
    if raw.get("model_type") != "kimi_k2":
        return None
    fields = {k: v for k, v in raw.items() if k not in ("model_type", "auto_map", "architectures")}
    return DeepseekV3Config(**fields)


def load_policy(
    name_or_path: str,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    device_map: str | None = None,
) -> Policy:
    """Load model and tokenizer from a local directory or hub id with ``from_pretrained``."""
    source = resolve_model_source(name_or_path)
    torch_dtype = policy_dtype(dtype)
    config = _kimi_k2_as_deepseek_v3(Path(source)) if os.path.isdir(source) else None
    kwargs = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if config is not None:
        kwargs["config"] = config
    if device_map:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as exc:  # missing files, no network for a hub id, …
        raise K2RLError(f"cannot load model {name_or_path!r}: {str(exc).splitlines()[0]}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Policy(model=model, tokenizer=tokenizer)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
