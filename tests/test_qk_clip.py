"""QK-Clip: per-head largest attention logits, observed in training forwards; heads above tau rescaled, others untouched."""

from __future__ import annotations

import math

import pytest
import torch
from peft import get_peft_model

from k2rl.config import load_config
from k2rl.config.sections import LoraConfig
from k2rl.errors import K2RLError
from k2rl.experts.lora import expert_lora_config
from k2rl.policy.build import load_policy
from k2rl.trainer.qk_clip import QKClip, head_max_logits

from test_optimizers import QUICKSTART, _trainer


def _adapted(tiny_policy_dir, targets):
    policy = load_policy(str(tiny_policy_dir))
    model = get_peft_model(policy.model, expert_lora_config(policy.model, targets, 4, 8))
    torch.manual_seed(0)
    with torch.no_grad():  # adapters that change the attention (PEFT starts lora_B at zero)
        for name, param in model.named_parameters():
            if "self_attn" in name and "lora_B" in name:
                param.normal_(0, 3.0)
    return model


def _batch():
    ids = torch.randint(5, 100, (2, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding, as in generation batches
    return ids, mask


def test_the_probe_changes_nothing_and_records_only_training_forwards(tiny_policy_dir):
    model = _adapted(tiny_policy_dir, ["attention"])
    ids, mask = _batch()
    before = model(input_ids=ids, attention_mask=mask).logits
    seen = {}
    clip = QKClip(model, tau=1e9, record=seen.__setitem__)
    after = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(before, after)
    assert len(clip.maxima) == model.config.num_hidden_layers
    with torch.no_grad():  # generation-style forwards are not training forwards: nothing recorded
        clip.maxima.clear()
        model(input_ids=ids, attention_mask=mask)
    assert not clip.maxima
    assert clip.clip() == 0 and not seen


def test_head_max_logits_ignores_masked_positions():
    query, key = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)
    key[..., 2, :] *= 1000  # a huge key at the last position: only the last query may see it
    causal = head_max_logits(query, key, None, 0.5)
    full = query @ key.mT * 0.5
    future = torch.ones(3, 3, dtype=torch.bool).triu(1)
    expected = torch.stack([full[0, h].masked_fill(future, float("-inf")).max() for h in range(2)])
    assert torch.equal(causal, expected)
    additive = torch.zeros(1, 1, 3, 3).masked_fill(future, torch.finfo(torch.float32).min)  # eager's mask form
    assert torch.equal(head_max_logits(query, key, additive, 0.5), expected)
    blocked = torch.ones(1, 1, 3, 3, dtype=torch.bool).tril()
    blocked[..., 2, 2] = False
    assert torch.all(head_max_logits(query, key, blocked, 0.5) < expected.abs().max() / 10)


def test_clip_rescales_exactly_the_heads_above_tau(tiny_policy_dir):
    model = _adapted(tiny_policy_dir, ["attention"])
    clip = QKClip(model, tau=1.0)
    ids, mask = _batch()
    model(input_ids=ids, attention_mask=mask)
    layer, module, rows_q, rows_k = clip.layers[1]
    maxima = clip.maxima[layer].clone()
    assert maxima.min() < maxima.max()
    clip.tau = float(maxima.sort().values[1:3].mean())  # two heads above tau, two below
    above = (maxima > clip.tau).tolist()
    assert sum(above) == 2
    (q_b,), (kv_b,) = rows_q, rows_k
    q_before, kv_before = q_b.detach().clone(), kv_b.detach().clone()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    clip.clip()
    nope, rope, v = module.qk_nope_head_dim, module.qk_rope_head_dim, module.v_head_dim
    for head, clipped in enumerate(above):
        gamma = clip.tau / maxima[head].item() if clipped else 1.0
        q_rows, kv_rows = q_b[head * (nope + rope):(head + 1) * (nope + rope)], kv_b[head * (nope + v):(head + 1) * (nope + v)]
        q_old, kv_old = q_before[head * (nope + rope):(head + 1) * (nope + rope)], kv_before[head * (nope + v):(head + 1) * (nope + v)]
        if not clipped:
            assert torch.equal(q_rows, q_old) and torch.equal(kv_rows, kv_old)  # bit-identical
            continue
        assert torch.equal(q_rows[:nope], q_old[:nope] * math.sqrt(gamma))  # q_nope: sqrt(gamma)
        assert torch.equal(q_rows[nope:], q_old[nope:] * gamma)  # the head's own rotary query: gamma
        assert torch.equal(kv_rows[:nope], kv_old[:nope] * math.sqrt(gamma))  # k_nope: sqrt(gamma)
        assert torch.equal(kv_rows[nope:], kv_old[nope:])  # its value rows stay
    # the shared rotary key (kv_a_proj_with_mqa), o_proj and every frozen base weight stay
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)
    assert not clip.maxima  # one step's maxima, then forgotten


def test_muonclip_refuses_a_recipe_without_trained_attention():
    with pytest.raises(K2RLError, match="muonclip clips attention logits, but no attention weights are trained") as caught:
        load_config(QUICKSTART, ["trainer.optimizer=muonclip"])
    assert "\n" not in str(caught.value)
    config = load_config(QUICKSTART, ["trainer.optimizer=muonclip", "trainer.lora.targets=[routed_experts, attention]"])
    assert config.trainer.optimizer == "muonclip" and config.trainer.qk_clip_tau == 100.0


def test_a_muonclip_run_logs_the_logits_and_clips_heads_above_tau(tiny_policy_dir, tmp_path):
    trainer = _trainer(tiny_policy_dir, tmp_path, optimizer="muonclip", max_steps=2, qk_clip_tau=1e-3,
                       muon_learning_rate=2e-2, lora=LoraConfig(targets=["routed_experts", "attention"]))
    trainer.train()
    logged = [r for r in trainer.state.log_history if "qk_clip/max_logit" in r]
    assert len(logged) == 2
    heads = trainer.model.config.num_attention_heads * trainer.model.config.num_hidden_layers
    assert all(r["qk_clip/clipped"] == heads for r in logged)  # a tiny tau: every head passes it
    assert all(sum(k.startswith("qk_clip/layer") for k in r) == heads for r in logged)
    assert all(r["qk_clip/max_logit"] > 1e-3 for r in logged)
