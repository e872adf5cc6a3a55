"""Where each HF MoE family keeps its experts, router and shared expert (transformers 5.24 modeling files).

Every family listed stores its routed experts fused (``<moe>.experts.gate_up_proj`` and
``<moe>.experts.down_proj``, one 3-D tensor each per layer) and has a router returning
``(router_logits, top-k weights, top-k indices)``; they differ in where the MoE block and its router
sit in a decoder layer and in the shared expert's parameters. Everything k2rl does to experts (LoRA,
merged generation, routing profile, routing replay, the vLLM weight split) reads this table; a model
with fused experts whose family is not here is refused in one line naming the family and the feature.
A model without experts is dense: its adapters go on its MLP and attention linears instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from k2rl.errors import K2RLError


@dataclass(frozen=True)
class Family:
    moe: str  # the MoE block's attribute in a decoder layer
    router: str  # the router's attribute in the MoE block
    shared: tuple[str, ...] = ()  # the shared expert's weight parameters, relative to a decoder layer

    @property
    def routed_parameters(self) -> list[str]:
        return [f"{self.moe}.experts.gate_up_proj", f"{self.moe}.experts.down_proj"]

    @property
    def router_module(self) -> str:
        return f"{self.moe}.{self.router}"


def _linears(prefix: str, *names: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{name}.weight" for name in names)


_DEEPSEEK = Family("mlp", "gate", _linears("mlp.shared_experts", "gate_proj", "up_proj", "down_proj"))
_PLAIN = Family("mlp", "gate")
_GRANITE_SHARED = Family("block_sparse_moe", "router", _linears("shared_mlp", "input_linear", "output_linear"))

FAMILIES: dict[str, Family] = {
    "deepseek_v3": _DEEPSEEK,  # also Kimi K2 (loaded as deepseek_v3)
    "deepseek_v2": _DEEPSEEK,
    "qwen2_moe": Family("mlp", "gate", _linears("mlp.shared_expert", "gate_proj", "up_proj", "down_proj")),
    "qwen3_moe": _PLAIN,
    "mixtral": _PLAIN,
    "olmoe": _PLAIN,
    "gpt_oss": Family("mlp", "router"),
    "granitemoe": Family("block_sparse_moe", "router"),
    "granitemoeshared": _GRANITE_SHARED,
    "granitemoehybrid": _GRANITE_SHARED,
}


def model_type(model: torch.nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) or type(model).__name__


def has_fused_experts(model: torch.nn.Module) -> bool:
    return any(name.endswith("experts.gate_up_proj") and p.dim() == 3 for name, p in model.named_parameters())


def family_of(model: torch.nn.Module, feature: str) -> Family | None:
    """The model's MoE family, or None for a dense model; an undescribed MoE family is one error naming ``feature``."""
    kind = model_type(model)
    if kind in FAMILIES:
        return FAMILIES[kind]
    if has_fused_experts(model):
        raise K2RLError(
            f"{feature}: MoE family {kind!r} is not supported (k2rl knows {', '.join(sorted(FAMILIES))}); "
            "describe it in k2rl/experts/families.py"
        )
    return None


def moe_routers(model: torch.nn.Module, feature: str = "MoE routers") -> list[tuple[int, torch.nn.Module]]:
    """``(layer index, router)`` for every MoE layer (none for a dense model)."""
    family = family_of(model, feature)
    if family is None:
        return []
    pattern = re.compile(rf"layers\.(\d+)\.{re.escape(family.router_module)}$")
    return [(int(m.group(1)), module) for name, module in model.named_modules() if (m := pattern.search(name))]


def dense_linears(model: torch.nn.Module, part: str) -> list[str]:
    """Module names of the decoder layers' ``nn.Linear`` in their MLP (``mlp``) or attention (``attention``)."""
    pattern = re.compile(r"layers\.\d+\.mlp\.\w+$" if part == "mlp" else r"layers\.\d+\.(self_attn|attention)\.\w+$")
    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and pattern.search(name)]
