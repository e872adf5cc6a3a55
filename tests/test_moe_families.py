"""Every MoE family transformers ships with fused experts, and dense models: tiny random configs built here.

Per family: LoRA attaches to its routed (and shared) experts; merged generation is token-identical to
PEFT's path; a short GRPO run (with routing replay) moves only adapter tensors; the routing profile and
expert selection work on its routers; with routing replay fed the rollout's own choices the training
forward's logits equal the live forward's; and the merged expert tensors, in the family's checkpoint
format, load back (through transformers) as the adapted policy, the way vLLM would load them.
"""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

from k2rl.config import DataConfig, TrainerConfig
from k2rl.data.sources import load_task_data
from k2rl.errors import K2RLError
from k2rl.experts._peft import routed_expert_adapters
from k2rl.experts.families import FAMILIES, moe_routers
from k2rl.experts.lora import check_policy_supports, expert_lora_config, merged_expert_adapters
from k2rl.experts.profile import profile_routing
from k2rl.experts.replay import RoutingReplay
from k2rl.experts.selection import restrict_to_experts
from k2rl.policy.tokenizer import build_tokenizer
from k2rl.rollouts.vllm_sync import checkpoint_name, checkpoint_weights, merged_expert_tensors
from k2rl.trainer.build import build_trainer

MOE = dict(num_experts=8, num_local_experts=8, n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=16)
MLA = dict(q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, num_key_value_heads=4)
SHAPES = {
    # DeepSeek-V3 with routing groups (a forced expert may lie outside the live groups) and the bias
    "deepseek_v3": dict(**MOE, **MLA, first_k_dense_replace=1, n_shared_experts=1, n_group=2, topk_group=1,
                        norm_topk_prob=True, routed_scaling_factor=2.5),
    "deepseek_v2": dict(**MOE, **MLA, first_k_dense_replace=1, n_shared_experts=1, routed_scaling_factor=1.5),
    "qwen3_moe": dict(**MOE, head_dim=8, norm_topk_prob=True),
    "qwen2_moe": dict(**MOE, shared_expert_intermediate_size=32),
    "mixtral": dict(**MOE),
    "olmoe": dict(**MOE),
    "gpt_oss": dict(**MOE, head_dim=8),
    "granitemoe": dict(**MOE),
    "granitemoeshared": dict(**MOE, shared_intermediate_size=32),
    "granitemoehybrid": dict(**MOE, shared_intermediate_size=32, layer_types=["mamba", "attention"], mamba_n_heads=4,
                             mamba_d_head=16, mamba_d_state=8, mamba_n_groups=1, mamba_chunk_size=16),
}
DENSE = ("llama", "qwen2")
QUESTIONS = ["What is 3 + 4?", "Sam has 12 pens and loses 5. How many are left?", "What is 20 + 22?"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def tiny(kind: str, tokenizer, seed: int = 0):
    shape = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=16, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    config = AutoConfig.for_model(kind, **{**shape, **SHAPES.get(kind, {})})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # routers at init are near uniform; give them real preferences
        for _, router in moe_routers(model):
            router.weight.normal_(std=0.5)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def targets(kind: str) -> list[str]:
    if kind in DENSE:
        return ["mlp", "attention"]
    return ["routed_experts", "shared_experts"] if FAMILIES[kind].shared else ["routed_experts"]


def adapted(kind, tokenizer, groups=None):
    model = tiny(kind, tokenizer)
    peft_model = get_peft_model(model, expert_lora_config(model, groups or targets(kind), r=2, alpha=4))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # PEFT starts B at zero; make the adapter change the policy
                param.normal_(std=0.3)
    return peft_model.eval()


def prompts(tokenizer):
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
             for q in QUESTIONS]
    tokenizer.padding_side = "left"
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)


@pytest.mark.parametrize("kind", [*SHAPES, *DENSE])
def test_lora_attaches_and_merged_generation_is_token_identical_to_peft(kind, tokenizer):
    model = adapted(kind, tokenizer)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    family = FAMILIES.get(kind)
    if family:  # both fused tensors of every MoE layer
        assert len(routed_expert_adapters(model)) == 2 * len(moe_routers(model)) > 0
        assert any(f"{family.moe}.experts." in n for n in trainable)
    for part in () if family else ("mlp.", "self_attn."):
        assert any(part in n for n in trainable), part
    for shared in family.shared if family else ():
        assert any(shared.removesuffix(".weight") in n for n in trainable), shared
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    enc = prompts(tokenizer)
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        peft_tokens = model.generate(**enc, **kwargs)
        with merged_expert_adapters(model):
            merged_tokens = model.generate(**enc, **kwargs)
        with model.disable_adapter():
            base_logits = model(**enc).logits
        adapted_logits = model(**enc).logits
    assert torch.equal(merged_tokens, peft_tokens)
    assert not torch.allclose(base_logits, adapted_logits, atol=1e-4)  # the adapter is really in play
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if "lora_" not in n)  # restored


@pytest.mark.parametrize("kind", [*SHAPES, *DENSE])
def test_short_grpo_run_moves_only_adapter_tensors(kind, tokenizer, tmp_path):
    model = tiny(kind, tokenizer)
    config = TrainerConfig(max_steps=2, per_device_train_batch_size=4, num_generations=4, max_completion_length=4,
                           logging_steps=1, learning_rate=1e-2, routing_replay=kind not in DENSE)
    config.lora.targets = targets(kind)
    check_policy_supports(model, config)
    data = load_task_data(DataConfig(train_size=8, eval_size=4), seed=0)

    def length_reward(prompts, completions, **kwargs):  # spread inside each group: non-zero advantages
        return [float(len(c[0]["content"]) % 3) for c in completions]

    trainer = build_trainer(model, tokenizer, data.train, [length_reward], [1.0], config, tmp_path, seed=0)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and all("lora_" in n for n in changed), sorted(n for n in changed if "lora_" not in n)


@pytest.mark.parametrize("kind", SHAPES)
def test_routing_profile_and_expert_selection(kind, tokenizer):
    model = tiny(kind, tokenizer)
    messages = [[{"role": "user", "content": q}] for q in QUESTIONS]
    profile = profile_routing(model, tokenizer, messages)
    assert profile.layers == [layer for layer, _ in moe_routers(model)] and profile.layers
    torch.testing.assert_close(torch.tensor(profile.gate.sum(axis=1)), torch.ones(len(profile.layers), dtype=torch.float64))
    selection = profile.select(0.5)
    model = get_peft_model(model, expert_lora_config(model, ["routed_experts"], r=2, alpha=4))
    restrict_to_experts(model, selection)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    enc = prompts(tokenizer)
    for _ in range(2):
        model(**enc, labels=enc["input_ids"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    moved_any = False
    for layer, wrapper in routed_expert_adapters(model):
        moved = wrapper.get_delta_weight("default").flatten(1).abs().amax(dim=1)
        others = [e for e in range(wrapper.num_experts) if e not in selection[layer]]
        assert torch.all(moved[others] == 0)
        moved_any |= bool(moved.any())
    assert moved_any


@pytest.mark.parametrize("kind", SHAPES)
def test_replay_of_the_rollouts_own_choices_reproduces_the_live_logits(kind, tokenizer):
    model = tiny(kind, tokenizer).eval()
    replay = RoutingReplay(model)
    enc = prompts(tokenizer)
    with torch.no_grad(), replay.recording():
        out = model.generate(**enc, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert len(replay.rollouts) == len(QUESTIONS)
    # The training layout: the whole sequence, with more left padding than at generation time.
    pad = torch.full((out.shape[0], 3), tokenizer.pad_token_id)
    ids = torch.cat([pad, out], dim=1)
    mask = torch.cat([torch.zeros_like(pad), enc["attention_mask"], torch.ones_like(out[:, enc["input_ids"].shape[1]:])], dim=1)
    with torch.no_grad():
        live = model(input_ids=ids, attention_mask=mask).logits
        replay.take_mismatch()
        with replay.replaying():
            replayed = model(input_ids=ids, attention_mask=mask).logits
    assert replay.take_mismatch() == 0.0  # the rollout's own choices, so no token-layer was overridden
    real = mask.bool()
    torch.testing.assert_close(replayed[real], live[real], rtol=1e-5, atol=1e-5)

    # After the routers drift, replay forces the rollout's experts back through the family's own router.
    routers = [router for _, router in moe_routers(model)]
    seen = {}
    handles = [r.register_forward_hook(lambda m, a, o, row=row: seen.__setitem__(row, o[2].sort(-1).values)) for row, r in enumerate(routers)]
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
        rollout = dict(seen)
        for router in routers:
            router.weight.add_(torch.randn_like(router.weight))
        model(input_ids=ids, attention_mask=mask)
        drifted = dict(seen)
        with replay.replaying():
            model(input_ids=ids, attention_mask=mask)
    keep = real.clone()
    keep[:, -1] = False  # each row's last token was never fed during generation
    keep = keep.reshape(-1)
    assert all(torch.equal(seen[row][keep], rollout[row][keep]) for row in rollout)
    assert any(not torch.equal(drifted[row][keep], rollout[row][keep]) for row in rollout)
    assert replay.take_mismatch() > 0
    for handle in handles:
        handle.remove()
    replay.remove()


@pytest.mark.parametrize("kind", SHAPES)
def test_merged_experts_in_checkpoint_format_load_back_as_the_adapted_policy(kind, tokenizer, tmp_path):
    model = adapted(kind, tokenizer, ["routed_experts"])  # what the fused tensors carry
    tensors = merged_expert_tensors(model)
    assert len(tensors) == 2 * len(moe_routers(model))
    state = {checkpoint_name(n): p.detach().clone() for n, p in model.get_base_model().state_dict().items() if "lora_" not in n}
    state.update(tensors)
    pushed = checkpoint_weights(model, state)
    save_file({n: t.contiguous() for n, t in pushed.items()}, str(tmp_path / "model.safetensors"))
    model.config.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    enc = prompts(tokenizer)
    with torch.no_grad():
        with merged_expert_adapters(model):
            expected = model(**enc).logits
        with model.disable_adapter():
            base = model(**enc).logits
        got = loaded(**enc).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, base, atol=1e-4)


def test_an_undescribed_moe_family_is_one_line_naming_it(tokenizer):
    model = tiny("mixtral", tokenizer)
    model.config.model_type = "mystery_moe"
    with pytest.raises(K2RLError, match=r"^trainer.lora.targets: MoE family 'mystery_moe' is not supported"):
        expert_lora_config(model, ["routed_experts"], r=2, alpha=4)
    with pytest.raises(K2RLError, match=r"^trainer.routing_replay: MoE family 'mystery_moe' is not supported"):
        RoutingReplay(model)


def test_dense_models_refuse_expert_features_in_one_line(tokenizer):
    model = tiny("llama", tokenizer)
    with pytest.raises(K2RLError, match=r"^trainer.lora.targets: routed_experts need an MoE model; 'llama' is dense"):
        expert_lora_config(model, ["routed_experts"], r=2, alpha=4)
    config = TrainerConfig(routing_replay=True)
    config.lora.targets = ["mlp"]
    with pytest.raises(K2RLError, match=r"^trainer.routing_replay: needs an MoE policy; 'llama' has no routers"):
        check_policy_supports(model, config)


def test_a_family_without_shared_expert_says_how_to_fix_the_targets(tokenizer):
    model = tiny("mixtral", tokenizer)
    with pytest.raises(K2RLError, match=r"has no shared expert; drop shared_experts from trainer.lora.targets "
                                        r"\(e.g. trainer.lora.targets=\[routed_experts\]\)"):
        expert_lora_config(model, ["routed_experts", "shared_experts"], r=2, alpha=4)
