"""What k2rl pushes to vLLM after an optimizer step: the adapted weights, merged, in the checkpoint's layout.

transformers stores a MoE layer's routed experts fused (``<moe>.experts.gate_up_proj`` and
``<moe>.experts.down_proj``, :mod:`k2rl.experts.families`); k2rl's LoRA adapts exactly these tensors
(:mod:`k2rl.experts.lora`), plus shared experts and dense/attention linears when the recipe says so.
vLLM reads a family's *checkpoint* tensors, which for most families are per expert and named
otherwise (DeepSeek/Qwen ``mlp.experts.{e}.gate_proj.weight``, Mixtral
``block_sparse_moe.experts.{e}.w1.weight``). Each expert must arrive as *base + its own LoRA delta*,
split on the right axis; a wrong split or a skipped merge still "loads", and generation silently
samples from the wrong policy.

- :func:`merged_expert_tensors` / :func:`checkpoint_weights`: the fused tensors with adapters folded
  in, and their checkpoint form by the family's own conversion (transformers' ``revert_weight_conversion``,
  what ``save_pretrained`` writes).
- :class:`WeightSync`: the push after each step -- every adapted weight whose adapter parameters
  changed since the last push, merged, in checkpoint form; nothing else moves.
- :func:`write_engine_checkpoint`: the starting checkpoint the engine loads (base weights, config
  fields vLLM reads, tokenizer).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers.core_model_loading import revert_weight_conversion

from k2rl.experts._peft import adapted_value, adapted_weights
from k2rl.experts.families import family_of
from k2rl.experts.lora import merged_expert_adapters
from k2rl.policy.build import vllm_config_fields


def checkpoint_name(peft_name: str) -> str:
    """A PEFT-wrapped parameter's name in the base model (the naming TRL's vLLM sync uses)."""
    return peft_name.removeprefix("base_model.model.").replace(".base_layer", "").replace(".modules_to_save.default", "")


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


class WeightSync:
    """Which adapted weights to push, and their merged checkpoint tensors.

    A weight is pushed when any parameter it depends on (its LoRA factors, or a fully trained module)
    differs from what was pushed last; the first push carries every adapted weight.
    """

    def __init__(self):
        self._pushed: dict[str, list[torch.Tensor]] = {}

    @torch.no_grad()
    def tensors(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The checkpoint tensors to push now (empty when nothing changed). Call :meth:`commit` once pushed."""
        adapted = adapted_weights(model)
        changed = {name: entry for name, entry in adapted.items()
                   if name not in self._pushed or any(not torch.equal(a, b) for a, b in zip(entry[2], self._pushed[name]))}
        self._pending = {name: [p.detach().clone() for p in entry[2]] for name, entry in changed.items()}
        if not changed:
            return {}
        merged = {}
        if any(kind == "parameter" for _, kind, _ in changed.values()):
            with merged_expert_adapters(model):
                merged = {checkpoint_name(name): adapted_value(name, module, kind)
                          for name, (module, kind, _) in changed.items() if kind == "parameter"}
        merged.update({checkpoint_name(name): adapted_value(name, module, kind)
                       for name, (module, kind, _) in changed.items() if kind != "parameter"})
        return checkpoint_weights(model, merged)

    def commit(self) -> None:
        """The tensors from the last :meth:`tensors` call reached the engine."""
        self._pushed.update(getattr(self, "_pending", {}))
        self._pending = {}

    def reset(self) -> None:
        """Push everything next time (a new engine)."""
        self._pushed.clear()


@torch.no_grad()
def write_engine_checkpoint(model: torch.nn.Module, tokenizer, out_dir: str | Path) -> Path:
    """The base weights (adapters off) as a checkpoint vLLM loads, with the config fields it reads.

    Adapters are pushed on top once the engine runs, so the base is all it needs at start-up.
    """
    from safetensors.torch import save_file

    base = _base(model)
    state = {}
    for name, tensor in base.state_dict().items():  # persistent buffers (the router's score bias) included
        if "lora_" in name or ".modules_to_save." in name:
            continue
        state.setdefault(checkpoint_name(name).replace(".original_module", ""), tensor.detach().to("cpu", torch.float32))
    state = {name: t.contiguous().clone() for name, t in checkpoint_weights(model, state).items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = base.config.to_dict()
    config.update(vllm_config_fields(config))
    config["torch_dtype"] = "float32"
    config["architectures"] = [type(base).__name__]  # vLLM picks its model class (and the runner) by this
    (out / "config.json").write_text(json.dumps(config, indent=1, default=str))
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
