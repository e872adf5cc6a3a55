"""GRPO on the tiny policy, in process: trainable share, and that only adapter tensors move."""

import torch

from k2rl.config import DataConfig, TrainerConfig
from k2rl.data.sources import load_task_data
from k2rl.policy.build import count_parameters, load_policy
from k2rl.rewards import get_reward
from k2rl.trainer.build import build_trainer


def test_few_grpo_steps_change_only_adapters(tiny_policy_dir, tmp_path):
    policy = load_policy(str(tiny_policy_dir))
    data = load_task_data(DataConfig(train_size=32, eval_size=8), seed=0)
    config = TrainerConfig(
        max_steps=2, per_device_train_batch_size=8, num_generations=4, max_completion_length=6, logging_steps=1,
        learning_rate=1e-2,
    )

    # A reward with spread inside each group, so advantages are non-zero and the adapters must move.
    def length_reward(prompts, completions, **kwargs):
        return [float(len(c[0]["content"]) % 3) for c in completions]

    trainer = build_trainer(policy.model, policy.tokenizer, data.train, [length_reward], [1.0], config, tmp_path, seed=0)
    trainable, total = count_parameters(trainer.model)
    assert 0 < trainable <= 0.10 * total
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed, "no parameter moved"
    assert all("lora_" in n for n in changed), sorted(n for n in changed if "lora_" not in n)
