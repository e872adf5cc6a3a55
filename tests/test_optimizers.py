"""trainer.optimizer (Muon per matrix / expert block, AdamW on the rest) and trainer.reset_optimizer_every."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from k2rl.config import DataConfig, TrainerConfig, load_config
from k2rl.config.sections import LoraConfig
from k2rl.data.sources import load_task_data
from k2rl.errors import K2RLError
from k2rl.policy.build import load_policy
from k2rl.trainer.build import build_trainer
from k2rl.trainer.muon import BlockMuon
from k2rl.trainer.optimizers import MuonAdamW, muon_rate, reset_state

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def _spread(prompts, completions, **kwargs):
    return [float(i % 2) for i in range(len(completions))]


def _trainer(tiny_policy_dir, tmp_path, **trainer_keys):
    policy = load_policy(str(tiny_policy_dir))
    data = load_task_data(DataConfig(train_size=16, eval_size=4), seed=0)
    config = TrainerConfig(per_device_train_batch_size=4, num_generations=4, max_completion_length=4,
                           logging_steps=1, **trainer_keys)
    return build_trainer(policy.model, policy.tokenizer, data.train, [_spread], [1.0], config, tmp_path, seed=0)


def test_muon_gets_exactly_the_two_dimensional_trainable_parameters(tiny_policy_dir, tmp_path):
    # PPO's value head adds 1-D biases next to the 2-D LoRA matrices, so both parts are non-empty.
    trainer = _trainer(tiny_policy_dir, tmp_path, algorithm="ppo", optimizer="muon", max_steps=1,
                       learning_rate=1e-3, muon_learning_rate=2e-2)
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, MuonAdamW)
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    muon_groups = optimizer.parts["muon"].param_groups
    muon_params = [p for g in muon_groups for p in g["params"]]
    adamw_params = [p for g in optimizer.parts["adamw"].param_groups for p in g["params"]]
    assert {id(p) for p in muon_params} == {id(p) for p in trainable if p.ndim == 2}
    assert {id(p) for p in adamw_params} == {id(p) for p in trainable if p.ndim != 2}
    assert adamw_params and len(muon_params) + len(adamw_params) == len(trainable)
    assert isinstance(optimizer.parts["muon"], BlockMuon)
    assert isinstance(optimizer.parts["adamw"], torch.optim.AdamW)
    assert {"expert_rows", "expert_cols"} <= {g["layout"] for g in muon_groups}  # the routed experts, per expert
    assert all(g["lr"] == 2e-2 and g["weight_decay"] == 0.0 for g in muon_groups)
    assert {g["lr"] for g in optimizer.parts["adamw"].param_groups} == {1e-3}
    assert optimizer.param_groups == optimizer.parts["muon"].param_groups + optimizer.parts["adamw"].param_groups


def test_muons_default_rate_is_a_multiple_of_adamws(tiny_policy_dir, tmp_path):
    optimizer = _trainer(tiny_policy_dir, tmp_path, optimizer="muon", max_steps=1, learning_rate=1e-3).create_optimizer()
    assert {g["lr"] for g in optimizer.parts["muon"].param_groups} == {muon_rate(1e-3)} == {2e-3}


def test_adamw_stays_the_trainers_own(tiny_policy_dir, tmp_path):
    optimizer = _trainer(tiny_policy_dir, tmp_path, max_steps=1).create_optimizer()
    assert type(optimizer) is torch.optim.AdamW


def test_a_few_muon_steps_change_only_the_lora_tensors(tiny_policy_dir, tmp_path):
    trainer = _trainer(tiny_policy_dir, tmp_path, optimizer="muon", max_steps=3, muon_learning_rate=2e-2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert isinstance(trainer.optimizer.optimizer, MuonAdamW)
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)
    # The learning-rate schedule drives Muon's group (its own rate) through the shared group dicts.
    assert set(trainer.lr_scheduler.base_lrs) == {2e-2}
    assert trainer.optimizer.optimizer.parts["muon"].param_groups[0]["lr"] == 2e-2  # after the 1-step warm-up


class _StepCounts(TrainerCallback):
    """AdamW's step count of the first trainable parameter at the start of each optimizer step (0: no state)."""

    def __init__(self):
        self.counts = []

    def on_step_begin(self, args, state, control, optimizer=None, model=None, **kwargs):
        param = next(p for p in model.parameters() if p.requires_grad)
        entry = optimizer.optimizer.state.get(param, {})
        self.counts.append(int(entry["step"]) if "step" in entry else 0)


def test_reset_clears_the_state_after_every_nth_step(tiny_policy_dir, tmp_path):
    trainer = _trainer(tiny_policy_dir, tmp_path, max_steps=5, reset_optimizer_every=2)
    counts = _StepCounts()
    trainer.add_callback(counts)
    trainer.train()
    # steps 1..5; the state is emptied after steps 2 and 4, so steps 3 and 5 start from nothing.
    assert counts.counts == [0, 1, 0, 1, 0]


def test_muon_state_round_trips_and_resets():
    matrix, bias = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))
    def combined():
        return MuonAdamW(BlockMuon([{"params": [matrix]}], lr=0.1), torch.optim.AdamW([bias], lr=0.1))
    optimizer = combined()
    (matrix.sum() ** 2 + bias.sum() ** 2).backward()
    optimizer.step()
    restored = combined()
    restored.load_state_dict(optimizer.state_dict())
    assert torch.equal(restored.parts["muon"].state[matrix]["momentum_buffer"], optimizer.parts["muon"].state[matrix]["momentum_buffer"])
    assert int(restored.parts["adamw"].state[bias]["step"]) == 1
    reset_state(restored)
    assert not restored.parts["muon"].state and not restored.parts["adamw"].state


@pytest.mark.parametrize("override, message", [
    ("trainer.optimizer=sgd", "trainer.optimizer: expected one of 'adamw', 'muon', 'muonclip', got 'sgd'"),
    ("trainer.qk_clip_tau=0", "trainer.qk_clip_tau must be positive"),
    ("trainer.reset_optimizer_every=-1", "trainer.reset_optimizer_every must be 0"),
    ("trainer.muon_learning_rate=0", "trainer.muon_learning_rate must be positive"),
])
def test_bad_optimizer_keys_are_one_line(override, message):
    with pytest.raises(K2RLError, match=message) as caught:
        load_config(QUICKSTART, [override])
    assert "\n" not in str(caught.value)


def test_a_muon_run_resumes_from_its_checkpoint(tiny_policy_dir, tmp_path):
    _trainer(tiny_policy_dir, tmp_path, optimizer="muon", max_steps=2, save_steps=1).train()
    saved = torch.load(tmp_path / "checkpoint-1" / "optimizer.pt", weights_only=True)
    assert set(saved) == {"muon"} and all("momentum_buffer" in s for s in saved["muon"]["state"].values())
    resumed = _trainer(tiny_policy_dir, tmp_path, optimizer="muon", max_steps=2, save_steps=1)
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))
    assert resumed.state.global_step == 2
    assert set(resumed.optimizer.optimizer.state_dict()["muon"]["state"]) == set(saved["muon"]["state"])


def _trained(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("optimizer", ["muon", "muonclip"])
def test_a_resumed_muon_run_ends_exactly_where_an_uninterrupted_one_does(tiny_policy_dir, tmp_path, optimizer):
    keys = {"optimizer": optimizer, "max_steps": 3, "save_steps": 1, "muon_learning_rate": 2e-2, "qk_clip_tau": 0.5,
            "lora": LoraConfig(targets=["routed_experts", "shared_experts", "attention"])}
    whole = _trainer(tiny_policy_dir, tmp_path / "whole", **keys)
    whole.train()
    resumed = _trainer(tiny_policy_dir, tmp_path / "resumed", **keys)
    resumed.train(resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-2"))
    assert resumed.state.global_step == 3
    expected, got = _trained(whole), _trained(resumed)
    moved = _trained(_trainer(tiny_policy_dir, tmp_path / "fresh", **keys))
    assert any(not torch.equal(expected[n], moved[n]) for n in expected)  # three steps did change the adapters
    assert all(torch.equal(expected[n], got[n]) for n in expected)  # bit-exact after the resume
