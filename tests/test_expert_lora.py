"""Expert adapters: what trains, what stays frozen, and that merged generation changes nothing."""

import copy

import pytest
import torch
from peft import get_peft_model

from k2rl.errors import K2RLError
from k2rl.experts.lora import expert_lora_config, merged_expert_adapters
from k2rl.policy.build import count_parameters, load_policy


@pytest.fixture()
def adapted(tiny_policy_dir):
    policy = load_policy(str(tiny_policy_dir))
    model = get_peft_model(policy.model, expert_lora_config(policy.model, ["routed_experts"], r=4, alpha=8))
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero; make the adapter actually do something
            torch.nn.init.normal_(param, std=0.05)
    return model, policy.tokenizer


def test_only_expert_adapters_are_trainable(adapted):
    model, _ = adapted
    trainable, total = count_parameters(model)
    assert 0 < trainable <= 0.10 * total
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n and ".experts" in n for n in names)
    assert not any("self_attn" in n or ".gate." in n for n in names)


def test_merged_generation_matches_unmerged_and_restores_base(adapted):
    model, tokenizer = adapted
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    prompts = [f"What is {i} + 4?" for i in range(4)]
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        logits_unmerged = model(**enc).logits
        tokens_unmerged = model.generate(**enc, **kwargs)
        with merged_expert_adapters(model):
            logits_merged = model(**enc).logits
            tokens_merged = model.generate(**enc, **kwargs)
        with model.disable_adapter():
            logits_base = model(**enc).logits
    torch.testing.assert_close(logits_merged, logits_unmerged, rtol=1e-4, atol=1e-5)
    assert torch.equal(tokens_merged, tokens_unmerged)
    assert not torch.allclose(logits_base, logits_unmerged)  # the adapter is really in play
    for name, param in model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, base_before[name]), f"{name} changed"


def test_shared_expert_target(tiny_policy_dir):
    model = load_policy(str(tiny_policy_dir)).model
    peft_model = get_peft_model(model, expert_lora_config(model, ["shared_experts"], r=4, alpha=8))
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert names and all("shared_experts" in n for n in names)


def test_unknown_target_is_a_user_error(tiny_policy_dir):
    model = load_policy(str(tiny_policy_dir)).model
    with pytest.raises(K2RLError, match="trainer.lora.targets: unknown"):
        expert_lora_config(model, ["everything"], r=4, alpha=8)
