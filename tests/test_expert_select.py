"""Expert-selective LoRA: routing profile, selection by cumulative relevance, only selected experts change."""

import numpy as np
import pytest
import torch
from peft import get_peft_model

from k2rl.errors import K2RLError
from k2rl.experts.lora import expert_lora_config
from k2rl.experts._peft import routed_expert_adapters as routed_expert_wrappers
from k2rl.experts.selection import effective_trainable_parameters, restrict_to_experts
from k2rl.policy.build import count_parameters, load_policy
from k2rl.experts.profile import RoutingProfile, moe_routers, plot_profile, profile_routing

PROMPTS = [[{"role": "user", "content": f"Tom has {a} apples and buys {b} more. How many now?"}] for a, b in [(3, 4), (12, 9), (7, 30), (41, 2)]]


def test_selection_reaches_threshold_with_fewest_experts():
    profile = RoutingProfile([1, 2], gate=np.array([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]]), share=np.ones((2, 4)), tokens=10)
    assert profile.select(0.8, "gate") == {1: [0, 1], 2: [0, 1, 2, 3]}
    assert profile.select(0.5, "gate") == {1: [0], 2: [0, 1]}
    assert profile.select(1.0, "gate") == {1: [0, 1, 2, 3], 2: [0, 1, 2, 3]}
    assert profile.select(0.3, "share") == {1: [0, 1], 2: [0, 1]}
    with pytest.raises(K2RLError, match="threshold_p"):
        profile.select(0.0)


def test_profile_counts_real_tokens_and_round_trips(tiny_policy_dir, tmp_path):
    policy = load_policy(str(tiny_policy_dir))
    profile = profile_routing(policy.model, policy.tokenizer, PROMPTS, batch_size=3)  # padding in the first batch
    texts = [policy.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in PROMPTS]
    tokens = sum(len(policy.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    assert profile.tokens == tokens
    assert profile.layers == [layer for layer, _ in moe_routers(policy.model)] and len(profile.layers) >= 1
    np.testing.assert_allclose(profile.gate.sum(axis=1), 1.0, rtol=1e-5)  # each token's weights sum to one
    np.testing.assert_allclose(profile.share.sum(axis=1), 1.0, rtol=1e-5)  # top-k picks, as a fraction
    profile.save(tmp_path / "p.json")
    again = RoutingProfile.load(tmp_path / "p.json")
    np.testing.assert_allclose(again.gate, profile.gate)
    selection = again.select(0.5)
    plot_profile(again, selection, "gate", tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_selected_experts_effective_weights_change(tiny_policy_dir):
    policy = load_policy(str(tiny_policy_dir))
    selection = profile_routing(policy.model, policy.tokenizer, PROMPTS).select(0.3)  # experts these tokens use
    model = get_peft_model(policy.model, expert_lora_config(policy.model, ["routed_experts"], r=4, alpha=8))
    layers = [layer for layer, _ in routed_expert_wrappers(model)]
    restrict_to_experts(model, selection)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
    texts = [policy.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in PROMPTS]
    enc = policy.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    for _ in range(3):  # a few real optimizer steps, gradients flow to every routed expert the tokens hit
        loss = model(**enc, labels=enc["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    changed = set()
    for layer, wrapper in routed_expert_wrappers(model):
        delta = wrapper.get_delta_weight("default")  # (experts, ...): the effective weight change
        moved = delta.flatten(1).abs().amax(dim=1)
        changed |= {(layer, int(e)) for e in torch.nonzero(moved).flatten()}
        assert torch.all(moved[[e for e in range(wrapper.num_experts) if e not in selection[layer]]] == 0)
    assert changed and changed <= {(layer, e) for layer in layers for e in selection[layer]}
    # The reported count is what can change: the selected experts' rank blocks, per adapted tensor.
    expected = sum(len(selection[layer]) * w.r["default"] * (w.in_features + w.out_features) for layer, w in routed_expert_wrappers(model))
    assert effective_trainable_parameters(model) == expected < count_parameters(model)[0]


def test_router_trainable_adds_router_weights(tiny_policy_dir):
    model = load_policy(str(tiny_policy_dir)).model
    peft_model = get_peft_model(model, expert_lora_config(model, ["routed_experts"], r=4, alpha=8, router=True))
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any(n.endswith("mlp.gate.modules_to_save.default.weight") for n in names)
    assert not any("shared_experts" in n or "self_attn" in n for n in names)


def test_selection_needs_routed_expert_adapters(tiny_policy_dir):
    model = get_peft_model(base := load_policy(str(tiny_policy_dir)).model, expert_lora_config(base, ["shared_experts"], r=4, alpha=8))
    with pytest.raises(K2RLError, match="routed_experts"):
        restrict_to_experts(model, {1: [0]})
