import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from k2rl.errors import K2RLError
from k2rl.policy.build import count_parameters, load_policy


def test_tiny_policy_has_k2_architecture(tiny_policy_dir):
    policy = load_policy(str(tiny_policy_dir))
    config = policy.model.config
    assert config.model_type == "deepseek_v3"
    assert config.first_k_dense_replace == 1  # dense first layer
    assert config.n_shared_experts == 1
    assert config.num_experts_per_tok / config.n_routed_experts == pytest.approx(8 / 384)
    assert config.q_lora_rank and config.kv_lora_rank  # MLA low-rank projections
    moe = policy.model.model.layers[1].mlp
    assert moe.experts.gate_up_proj.shape[0] == config.n_routed_experts  # fused expert tensor
    assert moe.gate.e_score_correction_bias.shape == (config.n_routed_experts,)
    assert type(policy.model.model.layers[0].mlp).__name__ == "DeepseekV3MLP"


def test_round_trip_gives_identical_logits(tiny_policy_dir, tmp_path):
    first = load_policy(str(tiny_policy_dir))
    first.model.save_pretrained(tmp_path / "copy")
    first.tokenizer.save_pretrained(tmp_path / "copy")
    second = load_policy(str(tmp_path / "copy"))
    ids = first.tokenizer("What is 2 + 3?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(first.model(ids).logits, second.model(ids).logits)


def test_tokenizer_chat_template_is_k2_format(tiny_policy_dir):
    tokenizer = load_policy(str(tiny_policy_dir)).tokenizer
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_user|>user<|im_middle|>hi<|im_end|><|im_assistant|>assistant<|im_middle|>"
    assert tokenizer.decode(tokenizer("x = 12345")["input_ids"]) == "x = 12345"
    assert tokenizer.padding_side == "left"


def test_kimi_k2_typed_checkpoint_loads_without_remote_code(tiny_policy_dir, tmp_path):
    policy = load_policy(str(tiny_policy_dir))
    target = tmp_path / "kimi"
    policy.model.save_pretrained(target)
    policy.tokenizer.save_pretrained(target)
    raw = json.loads((target / "config.json").read_text())
    raw["model_type"] = "kimi_k2"
    raw["architectures"] = ["DeepseekV3ForCausalLM"]
    raw["auto_map"] = {"AutoConfig": "configuration_deepseek.DeepseekV3Config"}  # remote code that is not there
    (target / "config.json").write_text(json.dumps(raw))
    with pytest.raises(Exception):
        AutoModelForCausalLM.from_pretrained(target)  # plain transformers does not know kimi_k2
    loaded = load_policy(str(target))
    assert loaded.model.config.model_type == "deepseek_v3"
    ids = policy.tokenizer("1 + 1", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, policy.model(ids).logits)


def test_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(K2RLError, match="model path does not exist"):
        load_policy(str(tmp_path / "missing"))


def test_count_parameters(tiny_policy_dir):
    model = load_policy(str(tiny_policy_dir)).model
    trainable, total = count_parameters(model)
    assert trainable == total > 1_000_000
