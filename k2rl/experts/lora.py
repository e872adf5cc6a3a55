"""LoRA adapters on the MoE experts, and fast generation with them.

Adapters attach through PEFT's ``target_parameters`` to the routed experts' fused 3-D weight tensors
(``experts.gate_up_proj`` and ``experts.down_proj`` of every MoE family in :mod:`k2rl.experts.families`)
and, optionally, to the shared expert's weights; a dense model's adapters go on its MLP (and
optionally attention) linears. Router and everything else stay frozen.

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

from k2rl.config.sections import check_lora_targets
from k2rl.errors import K2RLError
from k2rl.experts._peft import merged_parameter_adapters
from k2rl.experts.families import dense_linears, family_of, model_type
from k2rl.experts.replay import replayable_routers

MOE_TARGETS = ("routed_experts", "shared_experts")


def expert_lora_config(model: torch.nn.Module, targets: list[str], r: int, alpha: int, router: bool = False) -> LoraConfig:
    """A PEFT LoraConfig for ``model`` adapting the chosen groups.

    ``routed_experts`` / ``shared_experts``: the fused routed-expert tensors and the shared expert's
    weights, named per family (:mod:`k2rl.experts.families`). ``mlp`` / ``attention``: the decoder
    layers' MLP and attention linears (a dense model, or an MoE model's dense layers). ``router=True``
    also trains the MoE routers' weights in full (PEFT ``modules_to_save``: saved with the adapter).
    """
    check_lora_targets(targets)
    family = family_of(model, "trainer.lora.targets")
    if family is None and (moe := [t for t in targets if t in MOE_TARGETS] + (["router"] if router else [])):
        raise K2RLError(f"trainer.lora.targets: {', '.join(moe)} need an MoE model; {model_type(model)!r} is dense "
                        "(use trainer.lora.targets: [mlp] or [mlp, attention])")
    if "shared_experts" in targets and not family.shared:
        kept = [t for t in targets if t != "shared_experts"] or ["routed_experts"]
        raise K2RLError(f"trainer.lora.targets: MoE family {model_type(model)!r} has no shared expert; drop "
                        f"shared_experts from trainer.lora.targets (e.g. trainer.lora.targets=[{', '.join(kept)}])")
    parameters = (family.routed_parameters if "routed_experts" in targets else []) + (
        list(family.shared) if "shared_experts" in targets else [])
    # The shared expert is targeted by its weight *parameters* and dense linears by full module names:
    # for MoE model types PEFT rewrites module targets ending in gate_proj/up_proj/down_proj to the fused
    # routed-expert tensors, which would silently adapt the routed experts instead.
    modules = [name for part in ("mlp", "attention") if part in targets for name in dense_linears(model, part)]
    for part in ("mlp", "attention"):
        if part in targets and not dense_linears(model, part):
            raise K2RLError(f"trainer.lora.targets: {model_type(model)!r} has no {part} linears in its decoder layers")
    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,  # PEFT's parameter adapters do not support dropout
        target_modules=modules,
        target_parameters=parameters,
        modules_to_save=[family.router_module] if router else None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def merged_expert_adapters(model: torch.nn.Module) -> contextlib.AbstractContextManager[torch.nn.Module]:
    """Within the block, expert adapters are folded into the expert tensors; afterwards, restored exactly.

    Only for no-grad use (generation): the merged tensors are plain data, so no gradient reaches the
    adapter through them.
    """
    return merged_parameter_adapters(model)


def check_policy_supports(model: torch.nn.Module, config) -> None:
    """Before any training: the recipe's expert features (``config``: its ``trainer`` section) fit ``model``;
    else one error line naming the feature and the model family."""
    lora = config.lora
    expert_lora_config(model, lora.targets, lora.r, lora.alpha, router=config.router_trainable)
    if lora.expert_selection.threshold_p is not None and "routed_experts" not in lora.targets:
        raise K2RLError("trainer.lora.expert_selection: needs adapters on the routed experts (trainer.lora.targets: [routed_experts])")
    if config.routing_replay:
        replayable_routers(model)
