"""Adapters on a subset of the routed experts, inside PEFT's adapter on the fused expert tensor.

PEFT adapts a fused ``(experts, out, in)`` tensor with one ``ParamWrapper``: ``lora_A`` is
``Linear(in, r*E)`` and ``lora_B`` is ``Linear(r*E, out)``. Reading its ``get_delta_weight``, expert
``e``'s rank block is rows ``e*r .. e*r+r-1`` of ``lora_A.weight`` (reshaped ``(E, r, in)``) and
columns ``j*E + e`` for ``j < r`` of ``lora_B.weight`` (reshaped ``(out, r, E)``): strided, not
contiguous. It cannot target part of the tensor, so the subset is enforced here:

- the non-selected experts' ``lora_B`` columns are zero (PEFT's own init; set again so a loaded
  adapter obeys too), hence their delta ``B_e @ A_e`` is exactly zero;
- a gradient hook zeroes those columns' (and ``lora_A`` rows') gradients, so with Adam(W) their
  moments stay zero and the update is exactly zero; the delta stays exactly zero through training.

The saved adapter keeps PEFT's format (the zero blocks load as zero), so ``PeftModel.from_pretrained``
reproduces the trained policy without k2rl. Under FSDP, which flattens parameters, the hooks do not
apply; use DDP or ZeRO-3 with expert selection.
"""

from __future__ import annotations

import re

import torch
from peft.tuners.lora.layer import ParamWrapper

from k2rl.errors import K2RLError

_MASK = "_k2rl_expert_masks"  # attribute on a ParamWrapper: {id(lora weight): mask of what may change}


def routed_expert_wrappers(model: torch.nn.Module) -> list[tuple[int, ParamWrapper]]:
    """``(layer index, wrapper)`` for PEFT adapters on fused routed-expert tensors (``mlp.experts.*``)."""
    found = []
    for name, module in model.named_modules():
        match = re.search(r"layers\.(\d+)\.mlp\.experts(\.|$)", name)
        if match and isinstance(module, ParamWrapper) and getattr(module, "num_experts", 1) > 1:
            found.append((int(match.group(1)), module))
    return found


def _masks(wrapper: ParamWrapper, adapter: str, experts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    num_experts, r = wrapper.num_experts, wrapper.r[adapter]
    keep = torch.zeros(num_experts, dtype=torch.bool)
    keep[experts] = True
    rows_a = keep.repeat_interleave(r)  # row e*r + j belongs to expert e
    cols_b = keep.repeat(r)  # column j*E + e belongs to expert e
    a = wrapper.lora_A[adapter].weight
    b = wrapper.lora_B[adapter].weight
    return rows_a[:, None].expand_as(a).to(a.device), cols_b[None, :].expand_as(b).to(b.device)


def restrict_to_experts(model: torch.nn.Module, selection: dict[int, list[int]], adapter: str = "default") -> None:
    """Let only ``selection[layer]`` experts' adapters change; layers absent from ``selection`` keep none."""
    wrappers = routed_expert_wrappers(model)
    if not wrappers:
        raise K2RLError("expert selection needs adapters on the routed experts (trainer.lora.targets: [routed_experts])")
    for layer, wrapper in wrappers:
        experts = selection.get(layer, [])
        mask_a, mask_b = _masks(wrapper, adapter, experts)
        weight_a, weight_b = wrapper.lora_A[adapter].weight, wrapper.lora_B[adapter].weight
        with torch.no_grad():
            weight_b.mul_(mask_b)
        for param, mask in ((weight_a, mask_a), (weight_b, mask_b)):
            param.register_hook(lambda grad, mask=mask: grad * mask)
        getattr(wrapper, _MASK, {}).clear()
        setattr(wrapper, _MASK, {id(weight_a): mask_a, id(weight_b): mask_b})


def effective_trainable_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters that can actually change: masked-out expert blocks do not count."""
    masked = {}
    for _, wrapper in routed_expert_wrappers(model):
        masked.update({key: int(mask.sum()) for key, mask in getattr(wrapper, _MASK, {}).items()})
    return sum(masked.get(id(p), p.numel()) for p in model.parameters() if p.requires_grad)
