"""The K2 recipe trainers on the tiny policy: losses against the formulas, budgets, temperature, PTX."""

import copy

import pytest
import torch

from k2rl.config import BudgetConfig, DataConfig, PtxConfig, TrainerConfig
from k2rl.data.sources import load_task_data
from k2rl.errors import K2RLError
from k2rl.policy.build import load_policy
from k2rl.trainer.ppo import VALUE_HEAD_NAME
from k2rl.trainer.ptx import ptx_lm_loss
from k2rl.trainer.build import build_trainer


def spread_reward(prompts, completions, **kwargs):
    """A reward with spread inside each group, so advantages are non-zero."""
    return [float(len(c[0]["content"]) % 3) for c in completions]


def _data(size=32):
    train = load_task_data(DataConfig(train_size=size, eval_size=8), seed=0).train
    return train.map(lambda row, i: {"task": "short" if i % 2 else "long"}, with_indices=True)


def _trainer(tiny_policy_dir, tmp_path, **overrides):
    policy = load_policy(str(tiny_policy_dir))
    settings = dict(
        max_steps=2, per_device_train_batch_size=8, num_generations=4, max_completion_length=8, logging_steps=1,
        learning_rate=1e-2,
    )
    config = TrainerConfig(**{**settings, **overrides})
    return build_trainer(policy.model, policy.tokenizer, _data(), [spread_reward], [1.0], config, tmp_path, seed=0)


def _rollout(trainer, old_logp_shift=0.0):
    """One generation batch as the loss sees it, with the old policy's log-probs shifted per sequence."""
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # what the training loop sets for these settings
    rows = [trainer.train_dataset[i] for i in range(2) for _ in range(trainer.num_generations)]
    inputs = trainer._generate_and_score_completions(rows)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, attention, inputs["completion_ids"].size(1)
        )
    shift = old_logp_shift * torch.linspace(-1, 1, logps.size(0)).unsqueeze(1)
    inputs["old_per_token_logps"] = logps + shift
    return inputs, logps, inputs["completion_mask"].float()


def test_k2_trainer_loss_matches_the_formula(tiny_policy_dir, tmp_path):
    tau = 0.3
    trainer = _trainer(tiny_policy_dir, tmp_path, algorithm="k2", tau=tau)
    assert trainer.scale_rewards == "none"  # advantages are r - mean_r, as the K2 loss needs
    inputs, logps, mask = _rollout(trainer, old_logp_shift=0.4)
    rewards = inputs["advantages"]
    assert torch.allclose(rewards.view(-1, 4).sum(dim=1), torch.zeros(2), atol=1e-5)
    loss = trainer._compute_loss(trainer.model, inputs)
    log_ratio = ((logps - inputs["old_per_token_logps"]) * mask).sum(dim=1)
    expected = sum((rewards[i] - tau * log_ratio[i]) ** 2 for i in range(len(rewards))) / len(rewards)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)


def test_ppo_policy_loss_is_the_clipped_surrogate(tiny_policy_dir, tmp_path):
    trainer = _trainer(tiny_policy_dir, tmp_path, algorithm="ppo", vf_coef=0.0, epsilon=0.2)
    inputs, logps, mask = _rollout(trainer, old_logp_shift=0.5)
    advantages = inputs["advantages"]
    assert advantages.shape == mask.shape  # per-token GAE advantages
    assert (advantages * mask).sum().abs() < 1e-3  # whitened
    ratio = torch.exp(logps - inputs["old_per_token_logps"])
    assert ((ratio < 0.8) | (ratio > 1.2)).any(), "the shift should put some ratios outside the clip range"
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(0.8, 1.2) * advantages)
    expected = -(surrogate * mask).sum() / mask.sum()
    loss = trainer._compute_loss(trainer.model, inputs)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-6)


def test_ppo_value_loss_is_added_with_its_weight(tiny_policy_dir, tmp_path):
    trainer = _trainer(tiny_policy_dir, tmp_path, algorithm="ppo", vf_coef=0.5, cliprange_value=0.2)
    inputs, _, mask = _rollout(trainer)
    policy_only = trainer._compute_loss(trainer.model, {**inputs, "returns": inputs["old_values"]})
    # the fresh head predicts 0 everywhere and old values are 0: the clip holds v - R at (0 - R)
    assert torch.all(inputs["old_values"] == 0)
    with_value = trainer._compute_loss(trainer.model, inputs)
    value_loss = 0.5 * ((inputs["returns"] ** 2) * mask).sum() / mask.sum()
    assert (with_value - policy_only).item() == pytest.approx(0.5 * value_loss.item(), rel=1e-4)


def test_ptx_loss_is_mixed_in_with_its_weight(tiny_policy_dir, tmp_path):
    trainer = _trainer(tiny_policy_dir, tmp_path, ptx=PtxConfig(weight=0.3, batch_size=4))
    (ptx,) = [loss for loss in trainer.auxiliary_losses if loss.name == "ptx_loss"]
    inputs, _, _ = _rollout(trainer)
    upcoming = copy.deepcopy(ptx.batches)  # the batch the loss is about to draw
    total = trainer.compute_loss(trainer.model, inputs)
    rl = trainer._compute_loss(trainer.model, inputs)
    ids, attention, loss_mask = upcoming.next("cpu")
    with torch.no_grad():
        logits = trainer.model(input_ids=ids, attention_mask=attention).logits
    targets = loss_mask[:, 1:].bool()
    nll = torch.nn.functional.cross_entropy(logits[:, :-1][targets], ids[:, 1:][targets])
    assert (total - rl).item() == pytest.approx(0.3 * nll.item(), rel=1e-4)
    assert ptx_lm_loss(trainer.model, ids, attention, loss_mask).item() == pytest.approx(nll.item(), rel=1e-4)


def test_set_temperature_rescales_sampling_and_scoring(tiny_policy_dir, tmp_path):
    trainer = _trainer(tiny_policy_dir, tmp_path)
    trainer.set_temperature(2.0)
    assert trainer.generation_config.temperature == 2.0 and trainer.generation_kwargs["temperature"] == 2.0
    ids = torch.tensor([[5, 9, 17, 23, 42, 7]])
    attention = torch.ones_like(ids)
    with torch.no_grad():
        logps, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, attention, 3)
        with trainer.accelerator.autocast():  # scoring runs under the trainer's mixed precision
            logits = trainer.model(input_ids=ids, attention_mask=attention).logits[:, -4:-1].float()
    expected = torch.log_softmax(logits / 2.0, dim=-1).gather(-1, ids[:, -3:].unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(logps, expected, atol=1e-5)


def test_k2_run_with_budgets_and_decaying_temperature(tiny_policy_dir, tmp_path):
    budget = BudgetConfig(column="task", budgets={"short": 3}, default=8, penalty=0.5)
    trainer = _trainer(
        tiny_policy_dir, tmp_path, algorithm="k2", max_steps=3, budget=budget,
        temperature=1.2, temperature_end=0.6, temperature_schedule="linear",
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    logs = [h for h in trainer.state.log_history if "temperature" in h]
    assert [round(h["temperature"], 6) for h in logs] == [1.2, 0.9, 0.6]
    for h in logs:
        assert h["rewards/budget_exceeded/mean"] == pytest.approx(-0.5 * h["budget/exceeded_ratio"])
        assert h["completions/max_length"] <= 8
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and all("lora_" in n for n in changed)

    inputs = trainer._generate_and_score_completions([trainer.train_dataset[i] for i in (0, 1) for _ in range(4)])
    lengths = inputs["completion_mask"].sum(dim=1).tolist()
    assert all(n <= 8 for n in lengths[:4]) and all(n <= 3 for n in lengths[4:])  # row 1 is a "short" task


def test_ppo_run_trains_the_value_head_and_the_adapters(tiny_policy_dir, tmp_path):
    trainer = _trainer(tiny_policy_dir, tmp_path, algorithm="ppo", max_steps=2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert any(VALUE_HEAD_NAME in n for n in changed)
    assert any("lora_" in n for n in changed)
    assert all("lora_" in n or VALUE_HEAD_NAME in n for n in changed)
    assert any("ppo/value_loss" in h for h in trainer.state.log_history)


def test_recipe_errors_are_one_line(tiny_policy_dir, tmp_path):
    with pytest.raises(K2RLError, match="temperature_end"):
        _trainer(tiny_policy_dir, tmp_path, temperature_schedule="cosine")
    with pytest.raises(K2RLError, match="max_completion_length"):
        _trainer(tiny_policy_dir, tmp_path, budget=BudgetConfig(column="task", default=99))


def test_gspo_is_selectable(tiny_policy_dir, tmp_path):
    trainer = _trainer(tiny_policy_dir, tmp_path, loss_type="grpo", importance_sampling_level="sequence")
    assert trainer.importance_sampling_level == "sequence" and trainer.loss_type == "grpo"
