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

import weakref

import torch

from k2rl.errors import K2RLError
from k2rl.experts._peft import expert_blocks, routed_expert_adapters

# id(lora weight) -> (the weight, weakly; mask of the entries that may change): the trainable count reads it.
_MASKS: dict[int, tuple[weakref.ref, torch.Tensor]] = {}


def _mask_of(param: torch.Tensor) -> torch.Tensor | None:
    ref, mask = _MASKS.get(id(param), (None, None))
    return mask if ref is not None and ref() is param else None


def _masks(wrapper, adapter: str, experts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    num_experts, r, a, b = expert_blocks(wrapper, adapter)
    keep = torch.zeros(num_experts, dtype=torch.bool)
    keep[experts] = True
    rows_a = keep.repeat_interleave(r)  # row e*r + j belongs to expert e
    cols_b = keep.repeat(r)  # column j*E + e belongs to expert e
    return rows_a[:, None].expand_as(a).to(a.device), cols_b[None, :].expand_as(b).to(b.device)


def restrict_to_experts(model: torch.nn.Module, selection: dict[int, list[int]], adapter: str = "default") -> None:
    """Let only ``selection[layer]`` experts' adapters change; layers absent from ``selection`` keep none."""
    wrappers = routed_expert_adapters(model)
    if not wrappers:
        raise K2RLError("expert selection needs adapters on the routed experts (trainer.lora.targets: [routed_experts])")
    for layer, wrapper in wrappers:
        mask_a, mask_b = _masks(wrapper, adapter, selection.get(layer, []))
        _, _, weight_a, weight_b = expert_blocks(wrapper, adapter)
        with torch.no_grad():
            weight_b.mul_(mask_b)
        for param, mask in ((weight_a, mask_a), (weight_b, mask_b)):
            param.register_hook(lambda grad, mask=mask: grad * mask)
            _MASKS[id(param)] = (weakref.ref(param), mask)


def effective_trainable_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters that can actually change: masked-out expert blocks do not count."""
    total = 0
    for p in model.parameters():
        if p.requires_grad:
            mask = _mask_of(p)
            total += int(mask.sum()) if mask is not None else p.numel()
    return total
