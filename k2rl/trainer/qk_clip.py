"""QK-Clip (Kimi K2): keep every attention head's largest logit at or below ``tau``.

Muon's updates can let query/key weights grow until a few heads' attention logits explode; K2 bounds
them by rescaling, after each optimizer step, the query and key weights of each head whose largest
logit ``S`` in that step's forward passes exceeded ``tau`` (K2: 100), by ``gamma = tau / S``. For MLA
(K2's attention) a head's logit is ``q_nope . k_nope + q_rope . k_rope`` with ``k_rope`` shared by all
heads, so the head-specific parts are scaled as the report does: ``q_nope`` and ``k_nope`` rows by
``sqrt(gamma)``, ``q_rope`` rows by ``gamma``, the shared rotary key left alone. Heads at or below
``tau`` are not touched.

What is trained decides what is scaled: a linear with LoRA adapters has its adapters' ``lora_B`` rows
scaled (the frozen base stays exactly as loaded, so the saved adapter still describes the policy; each
clip shrinks the adapter's share of the head, so repeated clips pull the head back towards the base
model's logits), a fully trained linear its own weight rows.

The logits are observed by an attention function registered with transformers' ``AttentionInterface``
that records the per-head maximum of ``scale * q k^T`` over the unmasked positions of each training
(gradient-enabled) forward, then hands over to the model's own attention implementation.
"""

from __future__ import annotations

import math
import sys

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from k2rl.errors import K2RLError
from k2rl.experts._peft import output_row_weights

PROBE = "k2rl_qk_probe"


def _probing_attention(module, query, key, value, attention_mask, **kwargs):
    probe = getattr(module, "k2rl_qk_clip", None)
    if probe is not None and torch.is_grad_enabled():
        probe.observe(module, query, key, attention_mask, kwargs.get("scaling"))
    inner = module.k2rl_attention_inner
    eager = sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(inner, eager)(module, query, key, value, attention_mask, **kwargs)


def _probe_name(inner: str) -> str:
    """The probe's registered name in front of ``inner`` (masks are built as ``inner`` builds them)."""
    name = f"{PROBE}_{inner}"
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _probing_attention)
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[inner])
    return name


def head_max_logits(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
    """The largest ``scaling * q . k`` of each head over the positions ``mask`` lets attend (None: causal)."""
    logits = (query.detach().float() @ key.detach().float().mT) * scaling  # (batch, heads, q, k)
    if mask is None:
        q_len, k_len = logits.shape[-2:]
        allowed = torch.ones(q_len, k_len, dtype=torch.bool, device=logits.device).tril(k_len - q_len)
    elif mask.dtype == torch.bool:
        allowed = mask
    else:
        allowed = mask > torch.finfo(mask.dtype).min / 2
    return logits.masked_fill(~allowed, float("-inf")).amax(dim=(0, 2, 3))


class QKClip:
    """Watches the MLA attention layers of ``model`` and clips their heads after each optimizer step.

    ``record(name, value)`` logs ``qk_clip/max_logit`` (over all heads), one ``qk_clip/layer{L}.head{H}``
    per head and ``qk_clip/clipped`` (heads rescaled) after every step that ran a training forward.
    """

    def __init__(self, model: torch.nn.Module, tau: float, record=lambda name, value: None):
        self.tau, self.record = tau, record
        self.layers = []  # (layer index, attention module, query row tensors, key row tensors)
        for module in model.modules():
            if not hasattr(module, "kv_b_proj") or not hasattr(module, "qk_rope_head_dim"):
                continue
            query = module.q_b_proj if getattr(module, "q_lora_rank", None) else module.q_proj
            rows_q, rows_k = output_row_weights(query), output_row_weights(module.kv_b_proj)
            if rows_q or rows_k:
                self.layers.append((module.layer_idx, module, rows_q, rows_k))
        if not self.layers:
            raise K2RLError("trainer.optimizer: muonclip needs trained MLA attention (DeepSeek-V3 / Kimi K2 query and "
                            "key projections under trainer.lora.targets: [attention]); this model has none")
        self.maxima: dict[int, torch.Tensor] = {}
        for _, module, _, _ in self.layers:  # the config is shared: read every inner implementation first
            if not module.config._attn_implementation.startswith(PROBE):
                module.k2rl_attention_inner = module.config._attn_implementation
        for _, module, _, _ in self.layers:
            module.k2rl_qk_clip = self
            module.config._attn_implementation = _probe_name(module.k2rl_attention_inner)

    def observe(self, module, query, key, mask, scaling) -> None:
        found = head_max_logits(query, key, mask, scaling if scaling is not None else module.scaling)
        seen = self.maxima.get(module.layer_idx)
        self.maxima[module.layer_idx] = found if seen is None else torch.maximum(seen, found)

    @torch.no_grad()
    def clip(self) -> int:
        """Rescale the heads whose logits passed ``tau`` since the last call; returns how many were."""
        if not self.maxima:
            return 0
        clipped = 0
        for layer, module, rows_q, rows_k in self.layers:
            maxima = self.maxima.get(layer)
            if maxima is None:
                continue
            for head, value in enumerate(maxima.tolist()):
                self.record(f"qk_clip/layer{layer}.head{head}", value)
                if value > self.tau:
                    self._scale_head(module, head, self.tau / value, rows_q, rows_k)
                    clipped += 1
        self.record("qk_clip/max_logit", max(m.max().item() for m in self.maxima.values()))
        self.record("qk_clip/clipped", clipped)
        self.maxima.clear()
        return clipped

    @staticmethod
    def _scale_head(module, head: int, gamma: float, rows_q, rows_k) -> None:
        nope, rope = module.qk_nope_head_dim, module.qk_rope_head_dim
        q_start = head * (nope + rope)
        k_start = head * (nope + module.v_head_dim)
        for weight in rows_q:
            weight[q_start:q_start + nope].mul_(math.sqrt(gamma))
            weight[q_start + nope:q_start + nope + rope].mul_(gamma)
        for weight in rows_k:  # k_nope only: the head's value rows and the shared rotary key stay
            weight[k_start:k_start + nope].mul_(math.sqrt(gamma))
