"""The expert weights pushed to vLLM: per expert, base + that expert's LoRA delta, split the way the
adapted model computes (the GPU half, check_vllm_matches_policy, cannot run here)."""

import torch
from peft import get_peft_model

from k2rl.experts.lora import expert_lora_config
from k2rl.policy.build import load_policy
from k2rl.rollouts.vllm_sync import checkpoint_name, checkpoint_weights, merged_expert_tensors


def test_pushed_expert_weights_compute_what_the_adapted_experts_compute(tiny_policy_dir):
    torch.manual_seed(0)
    model = get_peft_model(base := load_policy(str(tiny_policy_dir)).model, expert_lora_config(base, ["routed_experts"], 4, 8))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)  # a trained-looking adapter (B starts at zero)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}

    tensors = merged_expert_tensors(model)
    assert sorted(tensors) == sorted(f"model.layers.{i}.mlp.experts.{p}" for i in (1, 2) for p in ("gate_up_proj", "down_proj"))
    assert all(torch.equal(base[n], p) for n, p in model.named_parameters() if "lora_" not in n)  # restored

    experts = model.base_model.model.model.layers[1].mlp.experts  # PEFT wrapper: adapter applied in forward
    pushed = checkpoint_weights(model, {n: t for n, t in tensors.items() if ".layers.1." in n})
    base_by_name = {checkpoint_name(n): p for n, p in base.items()}
    hidden = torch.randn(5, model.config.hidden_size)
    n_experts = model.config.n_routed_experts
    assert len(pushed) == 3 * n_experts
    for expert in (0, 7, n_experts - 1):
        index = torch.full((5, 1), expert)
        with torch.no_grad():
            adapted = experts(hidden, index, torch.ones(5, 1))
        prefix = f"model.layers.1.mlp.experts.{expert}"
        gate, up, down = (pushed[f"{prefix}.{p}.weight"] for p in ("gate_proj", "up_proj", "down_proj"))
        ours = torch.nn.functional.silu(hidden @ gate.T) * (hidden @ up.T) @ down.T
        torch.testing.assert_close(ours, adapted, rtol=1e-4, atol=1e-5)
        base_gate = base_by_name["model.layers.1.mlp.experts.gate_up_proj"][expert].chunk(2, dim=0)[0]
        assert not torch.allclose(gate, base_gate)  # the adapter is in what we push


def test_weight_sync_moves_only_what_changed(tiny_policy_dir):
    from k2rl.rollouts.vllm_sync import WeightSync

    base = load_policy(str(tiny_policy_dir)).model
    model = get_peft_model(base, expert_lora_config(base, ["routed_experts", "shared_experts"], 4, 8))
    sync = WeightSync()
    first = sync.tensors(model)
    sync.commit()
    n_experts = model.config.n_routed_experts
    shared = {f"model.layers.{i}.mlp.shared_experts.{p}.weight" for i in (1, 2) for p in ("gate_proj", "up_proj", "down_proj")}
    assert shared <= set(first) and len(first) == len(shared) + 2 * 3 * n_experts  # checkpoint layout: per expert
    assert sync.tensors(model) == {}
    sync.commit()
    with torch.no_grad():  # one layer's shared-expert adapter moves: only that weight is pushed
        model.base_model.model.model.layers[2].mlp.shared_experts.up_proj.lora_B["default"].weight.add_(0.5)
    changed = sync.tensors(model)
    assert list(changed) == ["model.layers.2.mlp.shared_experts.up_proj.weight"]
    layer = model.base_model.model.model.layers[2].mlp.shared_experts.up_proj
    expected = layer.base_layer.weight + layer.lora_B["default"].weight @ layer.lora_A["default"].weight * 2.0
    torch.testing.assert_close(changed["model.layers.2.mlp.shared_experts.up_proj.weight"], expected)
    assert sync.tensors(model), "not committed: pushed again"
    sync.commit()
    assert sync.tensors(model) == {}


def test_engine_checkpoint_loads_back_as_the_base_with_vllms_fields(tiny_policy_dir, tmp_path):
    import json

    from k2rl.rollouts.vllm_sync import write_engine_checkpoint

    policy = load_policy(str(tiny_policy_dir))
    model = get_peft_model(policy.model, expert_lora_config(policy.model, ["routed_experts", "shared_experts"], 4, 8))
    out = write_engine_checkpoint(model, policy.tokenizer, tmp_path / "ckpt")
    config = json.loads((out / "config.json").read_text())
    assert config["topk_method"] == "noaux_tc" and config["scoring_func"] == "sigmoid" and config["torch_dtype"] == "float32"
    reloaded = load_policy(str(out)).model
    ids = torch.tensor([[5, 9, 14, 3, 7]])
    with torch.no_grad(), model.disable_adapter():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)
    bias = [b for n, b in reloaded.named_buffers() if n.endswith("e_score_correction_bias")]
    assert bias, "the router's score bias is in the checkpoint"
