"""The PEFT door: what k2rl uses of PEFT's ParamWrapper still exists, and merged generation restores exactly."""

import peft
import torch

from k2rl.experts import _peft
from k2rl.experts.lora import expert_lora_config
from k2rl.policy.build import load_policy


def test_installed_peft_matches_what_the_door_was_written_against():
    assert _peft.incompatibilities() == [], f"PEFT {peft.__version__} vs {_peft.WRITTEN_AGAINST}"


def test_a_missing_wrapper_method_is_reported(monkeypatch):
    monkeypatch.delattr(_peft.ParamWrapper, "get_param")
    assert "ParamWrapper.get_param is gone" in _peft.incompatibilities()


def test_expert_blocks_and_merging_through_the_door(tiny_policy_dir):
    model = load_policy(str(tiny_policy_dir)).model
    model = peft.get_peft_model(model, expert_lora_config(model, ["routed_experts"], r=2, alpha=4))
    adapters = _peft.routed_expert_adapters(model)
    assert adapters and all(layer >= 1 for layer, _ in adapters)  # the first layer is dense
    experts, rank, a, b = _peft.expert_blocks(adapters[0][1], "default")
    assert (experts, rank) == (96, 2) and a.shape[0] == experts * rank and b.shape[1] == experts * rank
    with torch.no_grad():
        for _, wrapper in adapters:
            wrapper.lora_B["default"].weight.normal_()
    tensor = adapters[0][1].get_param()
    original, pointer = tensor.detach().clone(), tensor.data_ptr()
    with _peft.merged_parameter_adapters(model):
        assert not torch.equal(tensor.detach(), original)
    # the untouched original storage again, bit for bit (not merged then subtracted)
    assert tensor.data_ptr() == pointer and torch.equal(tensor.detach(), original)
