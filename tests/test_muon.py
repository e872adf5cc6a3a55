"""BlockMuon: each routed expert's LoRA blocks are orthogonalised on their own, each step sized as AdamW's would be."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from peft import get_peft_model

from k2rl.experts.lora import expert_lora_config
from k2rl.policy.build import load_policy
from k2rl.trainer.muon import BlockMuon, as_blocks, from_blocks, orthogonalise
from k2rl.trainer.optimizers import muon_groups

EXPERTS, RANK, ROWS, COLS = 6, 3, 20, 12


def _step(param: torch.nn.Parameter, grad: torch.Tensor, layout: str, lr: float = 0.01) -> torch.Tensor:
    """The change one BlockMuon step from fresh state makes to ``param`` for ``grad``."""
    before = param.detach().clone()
    optimizer = BlockMuon([{"params": [param], "layout": layout, "experts": EXPERTS}], lr=lr)
    param.grad = grad.clone()
    optimizer.step()
    return param.detach() - before


@pytest.mark.parametrize("layout, shape", [("expert_rows", (EXPERTS * RANK, COLS)), ("expert_cols", (ROWS, RANK * EXPERTS))])
def test_blocks_round_trip_and_follow_peft_layout(layout, shape):
    tensor = torch.randn(shape)
    blocks = as_blocks(tensor, layout, EXPERTS)
    assert blocks.shape[0] == EXPERTS
    assert torch.equal(from_blocks(blocks, layout, tensor.shape), tensor)
    e = 2  # expert e: rows e*r.. of lora_A, columns j*E + e of lora_B
    expected = tensor[e * RANK:(e + 1) * RANK] if layout == "expert_rows" else tensor[:, e::EXPERTS]
    assert torch.equal(blocks[e], expected)


@pytest.mark.parametrize("layout, shape", [("expert_rows", (EXPERTS * RANK, COLS)), ("expert_cols", (ROWS, RANK * EXPERTS))])
def test_one_experts_update_does_not_depend_on_another_experts_gradient(layout, shape):
    torch.manual_seed(0)
    grad = torch.randn(shape)
    other = grad.clone()
    blocks = as_blocks(other, layout, EXPERTS)
    blocks[3].mul_(1000.0).add_(torch.randn_like(blocks[3]))  # expert 3's gradient: much larger, other directions
    blocks[4].zero_()  # expert 4: no tokens routed to it
    first = as_blocks(_step(torch.nn.Parameter(torch.zeros(shape)), grad, layout), layout, EXPERTS)
    second = as_blocks(_step(torch.nn.Parameter(torch.zeros(shape)), other, layout), layout, EXPERTS)
    for e in (0, 1, 2, 5):
        assert torch.equal(first[e], second[e])
    assert not torch.allclose(first[3], second[3])
    assert torch.count_nonzero(second[4]) == 0  # no gradient, no step


@pytest.mark.parametrize("layout, shape", [("expert_rows", (EXPERTS * RANK, COLS)), ("expert_cols", (ROWS, RANK * EXPERTS)),
                                           ("matrix", (ROWS, COLS))])
def test_each_blocks_update_has_near_equal_singular_values_and_adamws_first_step_rms(layout, shape):
    torch.manual_seed(1)
    grad = torch.zeros(shape)
    view = as_blocks(grad, layout, EXPERTS)  # a view: filling it fills grad
    short = min(view.shape[-2:])
    spread = torch.logspace(0, -2, short)  # every block badly conditioned on purpose
    view.copy_(torch.linalg.qr(torch.randn(view.shape[0], view.shape[-2], short)).Q * spread
               @ torch.linalg.qr(torch.randn(view.shape[0], view.shape[-1], short)).Q.mT)
    lr = 0.01
    update = _step(torch.nn.Parameter(torch.zeros(shape)), grad, layout, lr)
    blocks = as_blocks(update, layout, EXPERTS)
    for block in blocks:
        scale = lr * math.sqrt(max(block.shape))
        singular = torch.linalg.svdvals(block / scale)
        assert singular.min() > 0.6 and singular.max() < 1.25, singular  # the quintic's band around 1
        # a first step has AdamW's first-step RMS, lr, whatever the block's shape
        rms = block.pow(2).mean().sqrt().item()
        assert 0.6 * lr < rms < 1.25 * lr
    # the raw gradient's condition number is far from 1
    raw = torch.linalg.svdvals(as_blocks(grad, layout, EXPERTS)[0])
    assert raw.max() / raw.min() > 10


def test_a_block_fed_noise_takes_steps_as_small_as_adamws_and_one_fed_signal_full_steps():
    """Why the step is sized per block: a fixed-RMS step would move a noise-fed expert as far as a learning one."""
    torch.manual_seed(3)
    shape = (EXPERTS * RANK, COLS)
    param = torch.nn.Parameter(torch.zeros(shape))
    twin = torch.nn.Parameter(torch.zeros(shape))
    muon = BlockMuon([{"params": [param], "layout": "expert_rows", "experts": EXPERTS}], lr=0.01)
    adamw = torch.optim.AdamW([twin], lr=0.01, betas=(0.95, 0.999), weight_decay=0.0)
    signal = torch.randn(shape)
    for _ in range(60):
        grad = torch.randn(shape)
        as_blocks(grad, "expert_rows", EXPERTS)[0].mul_(0.1).add_(as_blocks(signal, "expert_rows", EXPERTS)[0])
        before, twin_before = param.detach().clone(), twin.detach().clone()
        param.grad, twin.grad = grad.clone(), grad.clone()
        muon.step()
        adamw.step()
    rms = as_blocks(param.detach() - before, "expert_rows", EXPERTS).pow(2).mean(dim=(1, 2)).sqrt()
    adamw_rms = as_blocks(twin.detach() - twin_before, "expert_rows", EXPERTS).pow(2).mean(dim=(1, 2)).sqrt()
    assert 0.6 * 0.01 < rms[0] < 1.25 * 0.01  # expert 0: a steady gradient, full steps
    assert (rms[1:] < 0.4 * 0.01).all()  # the others: noise, which momentum averages out
    assert rms[0] > 3 * rms[1:].max()  # a fixed-RMS step would make them all equal
    assert (rms[1:] < 2 * adamw_rms[1:]).all() and (rms[1:] > adamw_rms[1:] / 2).all()  # about AdamW's size


def test_orthogonalise_batches_like_one_block_at_a_time():
    torch.manual_seed(2)
    blocks = torch.randn(5, 4, 9)
    batched = orthogonalise(blocks)
    for i in range(5):
        assert torch.allclose(batched[i], orthogonalise(blocks[i:i + 1])[0], atol=1e-6)
    tall = orthogonalise(blocks.mT)  # tall blocks are handled through their transpose
    assert torch.allclose(tall, batched.mT, atol=1e-6)


def test_the_experts_stacked_lora_is_split_per_expert_and_the_rest_is_whole(tiny_policy_dir):
    policy = load_policy(str(tiny_policy_dir))
    model = get_peft_model(policy.model, expert_lora_config(policy.model, ["routed_experts", "shared_experts", "attention"], 4, 8))
    groups = muon_groups(model)
    layouts = {(g["layout"], g["experts"]): g["params"] for g in groups}
    names = {id(p): n for n, p in model.named_parameters()}
    experts = model.config.n_routed_experts
    rows, cols, whole = layouts["expert_rows", experts], layouts["expert_cols", experts], layouts["matrix", 1]
    assert all(".experts." in names[id(p)] and "lora_A" in names[id(p)] for p in rows)
    assert all(".experts." in names[id(p)] and "lora_B" in names[id(p)] for p in cols)
    # two fused expert tensors (gate_up, down) per MoE layer
    moe_layers = model.config.num_hidden_layers - model.config.first_k_dense_replace
    assert len(rows) == len(cols) == 2 * moe_layers
    assert any("shared_experts" in names[id(p)] for p in whole) and any("self_attn" in names[id(p)] for p in whole)
    assert not any(".experts." in names[id(p)] for p in whole)
    trainable = [p for p in model.parameters() if p.requires_grad and p.ndim == 2]
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in trainable)


def test_block_muon_state_round_trips():
    param = torch.nn.Parameter(torch.randn(EXPERTS * RANK, COLS))
    optimizer = BlockMuon([{"params": [param], "layout": "expert_rows", "experts": EXPERTS}], lr=0.1)
    param.grad = torch.randn_like(param)
    optimizer.step()
    twin = torch.nn.Parameter(param.detach().clone())
    restored = BlockMuon([{"params": [twin], "layout": "expert_rows", "experts": EXPERTS}], lr=0.1)
    restored.load_state_dict(copy.deepcopy(optimizer.state_dict()))  # as from a file: no shared buffers
    grad = torch.randn_like(param)
    param.grad, twin.grad = grad.clone(), grad.clone()
    optimizer.step()
    restored.step()
    assert torch.equal(param, twin)


def test_moonshots_rule_fixes_every_blocks_step_rms_at_a_fifth_of_the_rate():
    """``trainer.muon_step_rms: moonshot``: K2's published rule, 0.2 x lr per block, noise or signal alike."""
    torch.manual_seed(3)
    shape = (EXPERTS * RANK, COLS)
    param = torch.nn.Parameter(torch.zeros(shape))
    muon = BlockMuon([{"params": [param], "layout": "expert_rows", "experts": EXPERTS}], lr=0.01, step_rms="moonshot")
    signal = torch.randn(shape)
    for _ in range(20):
        grad = torch.randn(shape)
        as_blocks(grad, "expert_rows", EXPERTS)[0].mul_(0.1).add_(as_blocks(signal, "expert_rows", EXPERTS)[0])
        before = param.detach().clone()
        param.grad = grad
        muon.step()
    rms = as_blocks(param.detach() - before, "expert_rows", EXPERTS).pow(2).mean(dim=(1, 2)).sqrt()
    assert ((0.6 * 0.2 * 0.01 < rms) & (rms < 1.25 * 0.2 * 0.01)).all(), rms  # the noise-fed experts too
    with pytest.raises(ValueError, match="unknown step RMS rule 'fixed'"):
        BlockMuon([{"params": [param]}], lr=0.01, step_rms="fixed")


def test_the_recipe_key_reaches_the_trainers_arguments(tmp_path):
    from k2rl.config import load_config
    from k2rl.trainer.config import grpo_config

    config = load_config("configs/quickstart.yaml", ["trainer.optimizer=muon", "trainer.muon_step_rms=moonshot"])
    assert grpo_config(config.trainer, [1.0], tmp_path, 0).muon_step_rms == "moonshot"
    assert grpo_config(load_config("configs/quickstart.yaml", []).trainer, [1.0], tmp_path, 0).muon_step_rms == "adamw"
