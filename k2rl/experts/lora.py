"""LoRA adapters on the MoE experts, and fast generation with them.

Adapters attach through PEFT's ``target_parameters`` to the routed experts' fused 3-D weight tensors
(``experts.gate_up_proj``: experts x 2*inter x hidden, ``experts.down_proj``: experts x hidden x inter)
and, optionally, to the shared expert's weights. Attention and router stay frozen.

Why generation needs care: PEFT applies a parameter adapter as a parametrization that rebuilds every
expert's delta (all experts, both tensors) on *each* forward call. Generation makes one forward call
per new token, so the rebuild dominates. :func:`merged_expert_adapters` computes the merged weights
once per generation call, points the expert tensors at them, and points them back at the untouched
original storage afterwards: the base weights are restored exactly (no add-then-subtract drift), and
training forwards still see the adapter through PEFT's own path.
"""

from __future__ import annotations

import contextlib

import torch
from peft import LoraConfig

from k2rl.errors import K2RLError
from k2rl.experts._peft import merged_parameter_adapters

# Names PEFT matches against ``<module path>.<parameter name>`` suffixes.
ROUTED_EXPERT_PARAMETERS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
# The shared expert is targeted by its weight *parameters*, not its modules: for MoE model types PEFT
# rewrites module targets ending in gate_proj/up_proj/down_proj to the fused routed-expert tensors,
# which would silently adapt the routed experts instead of the shared one.
SHARED_EXPERT_PARAMETERS = [f"shared_experts.{name}.weight" for name in ("gate_proj", "up_proj", "down_proj")]
TARGETS = {"routed_experts", "shared_experts"}
ROUTER_MODULE = "mlp.gate"  # DeepseekV3TopkRouter; the shared expert's gate_proj does not end with it


def expert_lora_config(targets: list[str], r: int, alpha: int, router: bool = False) -> LoraConfig:
    """A PEFT LoraConfig adapting the chosen expert groups (``routed_experts``, ``shared_experts``).

    ``router=True`` also trains the MoE routers' weights in full (PEFT ``modules_to_save``: saved with
    the adapter); they are small (experts x hidden per layer).
    """
    unknown = set(targets) - TARGETS
    if unknown or not targets:
        raise K2RLError(f"trainer.lora.targets: unknown {sorted(unknown) or 'empty list'}; choose from {sorted(TARGETS)}")
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,  # PEFT's parameter adapters do not support dropout
        target_modules=[],
        target_parameters=(ROUTED_EXPERT_PARAMETERS if "routed_experts" in targets else [])
        + (SHARED_EXPERT_PARAMETERS if "shared_experts" in targets else []),
        modules_to_save=[ROUTER_MODULE] if router else None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def merged_expert_adapters(model: torch.nn.Module) -> contextlib.AbstractContextManager[torch.nn.Module]:
    """Within the block, expert adapters are folded into the expert tensors; afterwards, restored exactly.

    Only for no-grad use (generation): the merged tensors are plain data, so no gradient reaches the
    adapter through them.
    """
    return merged_parameter_adapters(model)
