"""The one door to PEFT's internals: every PEFT name that is not its public API, in this module only.

k2rl adapts the MoE experts' fused 3-D weight tensors through PEFT's public ``target_parameters``;
PEFT implements that with ``ParamWrapper`` modules, which it does not document. Two things need
their internals: folding the adapters into the expert tensors for generation (PEFT would rebuild every
expert's delta at every decoding step), and reading one expert's rank block inside the fused
adapter (expert-selective LoRA). ``tests/test_peft_door.py`` fails loudly when what is used here
changes in an upgrade.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Iterator

import torch
from peft.tuners.lora.layer import LoraLayer, ParamWrapper

WRITTEN_AGAINST = "peft==0.21.2"

# What this module reads or calls on a ParamWrapper.
WRAPPER_ATTRIBUTES = ("merged", "disable_adapters", "active_adapters", "lora_A", "lora_B", "r", "merged_adapters")
WRAPPER_METHODS = ("get_param", "get_delta_weight")


def parameter_adapters(model: torch.nn.Module) -> list[ParamWrapper]:
    """PEFT's adapters on parameters (``target_parameters``), in module order."""
    return [m for m in model.modules() if isinstance(m, ParamWrapper)]


def routed_expert_adapters(model: torch.nn.Module) -> list[tuple[int, ParamWrapper]]:
    """``(layer index, adapter)`` for adapters on fused routed-expert tensors (``layers.N.<moe block>.experts.*``)."""
    found = []
    for name, module in model.named_modules():
        match = re.search(r"layers\.(\d+)\.\w+\.experts(\.|$)", name)
        if match and isinstance(module, ParamWrapper) and getattr(module, "num_experts", 1) > 1:
            found.append((int(match.group(1)), module))
    return found


def expert_blocks(wrapper: ParamWrapper, adapter: str) -> tuple[int, int, torch.nn.Parameter, torch.nn.Parameter]:
    """(experts, rank, lora_A weight, lora_B weight) of one adapter on a fused expert tensor.

    Reading PEFT's ``get_delta_weight``: expert ``e``'s rank block is rows ``e*r .. e*r+r-1`` of
    ``lora_A.weight`` and columns ``j*E + e`` (``j < r``) of ``lora_B.weight``.
    """
    return wrapper.num_experts, wrapper.r[adapter], wrapper.lora_A[adapter].weight, wrapper.lora_B[adapter].weight


def routed_expert_lora(model: torch.nn.Module) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter, int]]:
    """``(lora_A weight, lora_B weight, experts)`` of every adapter on a fused routed-expert tensor
    (layout: :func:`expert_blocks`)."""
    found = []
    for _, wrapper in routed_expert_adapters(model):
        for adapter in wrapper.lora_A:
            experts, _, weight_a, weight_b = expert_blocks(wrapper, adapter)
            found.append((weight_a, weight_b, experts))
    return found


def output_row_weights(linear: torch.nn.Module) -> list[torch.Tensor]:
    """The trainable tensors whose rows are ``linear``'s output rows: each active LoRA adapter's ``lora_B``
    weight on a PEFT-wrapped linear (the frozen base is left alone), else the linear's own weight when it
    is trained; empty when neither."""
    if isinstance(linear, LoraLayer) and not isinstance(linear, ParamWrapper):
        return [linear.lora_B[a].weight for a in linear.active_adapters if a in linear.lora_B]
    weight = getattr(linear, "weight", None)
    return [weight] if weight is not None and weight.requires_grad else []


@contextlib.contextmanager
def merged_parameter_adapters(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Within the block, every active parameter adapter is folded into its tensor; afterwards the tensor
    points at its untouched original storage again (no add-then-subtract drift). No-grad use only."""
    wrappers = [w for w in parameter_adapters(model) if not w.merged and not w.disable_adapters]
    originals: list[tuple[ParamWrapper, torch.nn.Parameter, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for wrapper in wrappers:
                adapters = [a for a in wrapper.active_adapters if a in wrapper.lora_A]
                if not adapters:
                    continue
                param = wrapper.get_param()
                delta = sum(wrapper.get_delta_weight(a) for a in adapters)
                originals.append((wrapper, param, param.data))
                param.data = param.data + delta.to(param.dtype)
                # PEFT's forward skips its parametrization for merged wrappers.
                wrapper.merged_adapters.extend(adapters)
        yield model
    finally:
        for wrapper, param, original in reversed(originals):
            param.data = original
            wrapper.merged_adapters.clear()


def adapted_weights(model: torch.nn.Module) -> dict[str, tuple[torch.nn.Module, str, list[torch.Tensor]]]:
    """Every weight an adapter changes: ``{peft name: (owner module, kind, the parameters it depends on)}``.

    ``kind`` is ``"parameter"`` (a ``target_parameters`` adapter: the value is read while
    :func:`merged_parameter_adapters` is active), ``"linear"`` (a LoRA linear: base weight plus
    ``get_delta_weight``) or ``"full"`` (``modules_to_save``: a trained copy of the whole module).
    """
    from peft.tuners.lora.layer import LoraLayer
    from peft.utils.other import ModulesToSaveWrapper

    found = {}
    for name, module in model.named_modules():
        if isinstance(module, ParamWrapper):
            adapters = [a for a in module.active_adapters if a in module.lora_A]
            sources = [p for a in adapters for p in (module.lora_A[a].weight, module.lora_B[a].weight)]
            found[f"{name}.{module.parameter_name}"] = (module, "parameter", sources)
        elif isinstance(module, LoraLayer) and isinstance(module.get_base_layer(), torch.nn.Linear):
            adapters = [a for a in module.active_adapters if a in module.lora_A]
            sources = [p for a in adapters for p in (module.lora_A[a].weight, module.lora_B[a].weight)]
            found[f"{name}.weight"] = (module, "linear", sources)
        elif isinstance(module, ModulesToSaveWrapper) and module.active_adapters:
            trained = module.modules_to_save[module.active_adapters[0]]
            for parameter_name, parameter in trained.named_parameters():
                found[f"{name}.{parameter_name}"] = (trained, "full", [parameter])
    return found


@torch.no_grad()
def adapted_value(name: str, module, kind: str) -> torch.Tensor:
    """The current merged value of an :func:`adapted_weights` entry (a copy; the module is untouched).

    A ``"parameter"`` entry must be read inside :func:`merged_parameter_adapters` (that is what folds it in).
    """
    if kind == "parameter":
        return module.get_param().detach().clone()
    if kind == "full":
        return dict(module.named_parameters())[name.rpartition(".")[2]].detach().clone()
    weight = module.get_base_layer().weight
    adapters = [a for a in module.active_adapters if a in module.lora_A]
    return weight + sum(module.get_delta_weight(a) for a in adapters).to(weight.dtype) if adapters else weight.clone()

def incompatibilities() -> list[str]:
    """What in the installed PEFT no longer matches what this module was written against (empty: fine)."""
    problems = []
    for name in WRAPPER_METHODS:
        if not callable(getattr(ParamWrapper, name, None)):
            problems.append(f"ParamWrapper.{name} is gone")
    if list(inspect.signature(ParamWrapper.get_delta_weight).parameters)[1:2] != ["adapter_name"]:
        problems.append("ParamWrapper.get_delta_weight no longer takes the adapter name")
    source = inspect.getsource(ParamWrapper)
    if "self.parameter_name" not in source:  # adapted_weights names a parameter adapter's tensor by it
        problems.append("ParamWrapper no longer records parameter_name")
    from peft.utils.other import ModulesToSaveWrapper

    if "modules_to_save" not in inspect.getsource(ModulesToSaveWrapper):
        problems.append("ModulesToSaveWrapper no longer keeps its trained copy in modules_to_save")
    for name in ("merged_adapters", "num_experts", "lora_A", "lora_B", "disable_adapters"):
        if name not in source and name not in inspect.getsource(inspect.getmodule(ParamWrapper)):
            problems.append(f"ParamWrapper no longer refers to {name}")
    return problems
