"""Dynamic sampling: zero-variance groups are replaced by fresh groups before the loss, within the cap."""

from __future__ import annotations

import pytest
import torch

from k2rl.config import DataConfig, TrainerConfig, load_config
from k2rl.config.rl_data import DynamicSamplingConfig
from k2rl.data.sources import load_task_data
from k2rl.errors import K2RLError
from k2rl.policy.build import load_policy
from k2rl.trainer.build import build_trainer
from k2rl.trainer.dynamic_sampling import splice, zero_variance_groups


def test_zero_variance_groups_and_splice_by_hand():
    output = {"advantages": torch.tensor([0.0, 0.0, 1.0, -1.0]), "prompt_ids": torch.tensor([[5, 6], [5, 6], [7, 8], [7, 8]]),
              "completion_ids": torch.tensor([[1], [2], [3], [4]]), "num_items_in_batch": torch.tensor(4)}
    assert zero_variance_groups(output["advantages"], 2) == [0]
    fresh = {"advantages": torch.tensor([0.5, -0.5, 0.0, 0.0]), "prompt_ids": torch.tensor([[9], [9], [4], [4]]),
             "completion_ids": torch.tensor([[1, 2], [3, 4], [5, 6], [7, 8]]), "num_items_in_batch": torch.tensor(8)}
    spliced = splice(output, fresh, targets=[0], sources=[0], group_size=2, pad_token_id=0)
    assert spliced["advantages"].tolist() == [0.5, -0.5, 1.0, -1.0]
    assert spliced["prompt_ids"].tolist() == [[0, 9], [0, 9], [7, 8], [7, 8]]  # prompts pad on the left
    assert spliced["completion_ids"].tolist() == [[1, 2], [3, 4], [3, 0], [4, 0]]  # completions on the right
    assert output["advantages"].tolist() == [0.0, 0.0, 1.0, -1.0]  # the original is untouched


def _run(tiny_policy_dir, tmp_path, max_rounds, flat_calls):
    """One RL step whose first ``flat_calls`` reward calls give every group equal rewards."""
    calls = []

    def flat_then_spread(prompts, completions, **kwargs):
        calls.append(len(completions))
        if len(calls) <= flat_calls:
            return [1.0] * len(completions)
        return [float(i % 2) for i in range(len(completions))]

    policy = load_policy(str(tiny_policy_dir))
    data = load_task_data(DataConfig(train_size=16, eval_size=4), seed=0)
    config = TrainerConfig(max_steps=1, per_device_train_batch_size=4, num_generations=2, max_completion_length=3,
                           logging_steps=1, dynamic_sampling=DynamicSamplingConfig(enabled=True, max_rounds=max_rounds))
    trainer = build_trainer(policy.model, policy.tokenizer, data.train, [flat_then_spread], [1.0], config, tmp_path, seed=0)
    seen = []
    original = trainer.policy_loss

    def recording(model, inputs):
        seen.append(inputs["advantages"].detach().clone())
        return original(model, inputs)

    trainer.policy_loss = recording
    trainer.train()
    logged = trainer.state.log_history[0]
    return torch.cat(seen), logged, calls


def test_no_zero_variance_group_reaches_the_loss_when_the_cap_allows(tiny_policy_dir, tmp_path):
    advantages, logged, calls = _run(tiny_policy_dir, tmp_path, max_rounds=2, flat_calls=1)
    assert zero_variance_groups(advantages, 2) == []
    assert logged["dynamic_sampling/dropped"] == 2 and logged["dynamic_sampling/left"] == 0
    assert len(calls) == 2 and logged["dynamic_sampling/extra_s"] > 0  # one refill round


def test_the_cap_bounds_the_extra_rounds(tiny_policy_dir, tmp_path):
    advantages, logged, calls = _run(tiny_policy_dir, tmp_path, max_rounds=1, flat_calls=2)
    assert len(calls) == 2  # the main round and one refill, no more
    assert logged["dynamic_sampling/dropped"] == 0 and logged["dynamic_sampling/left"] == 2
    assert zero_variance_groups(advantages, 2) == [0, 1]


@pytest.mark.parametrize("override, message", [
    ("trainer.dynamic_sampling.max_rounds=0", "trainer.dynamic_sampling.max_rounds must be at least 1"),
    ("trainer.dynamic_sampling=true", "trainer.dynamic_sampling: expected a mapping"),
])
def test_bad_dynamic_sampling_settings_are_one_line(override, message):
    with pytest.raises(K2RLError, match=message):
        load_config("configs/quickstart.yaml", [override])
