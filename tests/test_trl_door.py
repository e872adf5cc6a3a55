"""The TRL door: what k2rl uses of TRL's internals still exists as written, and the hooks really run."""

import dataclasses

import pytest
import trl
from trl import GRPOTrainer

from k2rl.config import DataConfig, TrainerConfig
from k2rl.data.sources import load_task_data
from k2rl.errors import K2RLError
from k2rl.policy.build import load_policy
from k2rl.trainer import _trl
from k2rl.trainer.build import build_trainer
from k2rl.trainer.config import K2GRPOConfig, grpo_config


def test_installed_trl_matches_what_the_door_was_written_against():
    assert _trl.incompatibilities() == [], f"TRL {trl.__version__} vs {_trl.WRITTEN_AGAINST}"


def test_a_changed_private_method_is_reported(monkeypatch):
    monkeypatch.delattr(GRPOTrainer, "_calculate_rewards")
    assert any("_calculate_rewards is gone" in p for p in _trl.incompatibilities())

    def renamed(self, inputs_renamed):
        return None

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", renamed)
    assert any("_generate_and_score_completions" in p for p in _trl.incompatibilities())


def test_the_config_is_built_once_and_never_mutated(tiny_policy_dir, tmp_path):
    policy = load_policy(str(tiny_policy_dir))
    data = load_task_data(DataConfig(train_size=16, eval_size=4), seed=0)
    config = TrainerConfig(algorithm="k2", max_steps=1, per_device_train_batch_size=4, num_generations=4,
                           max_completion_length=4, logging_steps=1)

    def spread(prompts, completions, **kwargs):
        return [float(i % 2) for i in range(len(completions))]

    trainer = build_trainer(policy.model, policy.tokenizer, data.train, [spread], [1.0], config, tmp_path, seed=0)
    assert isinstance(trainer.args, K2GRPOConfig) and trainer.args.scale_rewards == "none"
    before = dataclasses.asdict(trainer.args)
    trainer.train()
    assert dataclasses.asdict(trainer.args) == before


def test_the_config_validates_the_recipe_once(tmp_path):
    with pytest.raises(K2RLError, match="unscaled rewards"):
        K2GRPOConfig(output_dir=str(tmp_path), algorithm="k2", scale_rewards="group", use_cpu=True)
    with pytest.raises(K2RLError, match="trainer.algorithm must be one of"):
        K2GRPOConfig(output_dir=str(tmp_path), algorithm="reinforce", use_cpu=True)
    args = grpo_config(TrainerConfig(algorithm="k2"), [1.0], tmp_path, seed=0)
    assert args.scale_rewards == "none" and args.algorithm == "k2"


def test_a_changed_repeat_sampler_is_reported(monkeypatch):
    class Reshaped:
        def __init__(self, data_source, shuffle=True):
            pass

    monkeypatch.setattr(_trl, "RepeatSampler", Reshaped)
    assert any("RepeatSampler" in p for p in _trl.incompatibilities())


def test_a_reward_keyword_trl_stops_passing_is_reported(monkeypatch):
    def scoring_without_keywords(self, inputs, prompts, completions, completion_ids_list):
        reward_kwargs = {"trainer_state": self.state}
        return reward_kwargs

    monkeypatch.setattr(GRPOTrainer, "_calculate_rewards", scoring_without_keywords)
    problems = _trl.incompatibilities()
    assert any("no longer passes log_metric" in p for p in problems)
    assert any("no longer passes log_extra" in p for p in problems)


def test_the_trainer_attributes_k2rl_reads_are_named_and_checked():
    import inspect

    source = inspect.getsource(GRPOTrainer.__init__)
    assert _trl.missing_attributes(source) == []
    without = source.replace("self.eos_token_ids =", "self.renamed_eos_ids =")
    assert _trl.missing_attributes(without) == ["GRPOTrainer no longer sets self.eos_token_ids in __init__"]
    assert {"vllm_generation", "generation_kwargs", "eos_token_ids", "reward_weights"} <= set(_trl.TRAINER_ATTRIBUTES)


def test_a_row_whose_reward_failed_gets_no_reward_no_loss_and_no_say_in_its_group(tiny_policy_dir, tmp_path):
    """TRL would sum the other rewards of a row whose verifier raised (nansum: the failure counts as 0)."""
    from k2rl.rewards.isolation import isolate

    policy = load_policy(str(tiny_policy_dir))
    data = load_task_data(DataConfig(train_size=16, eval_size=4), seed=0)
    config = TrainerConfig(max_steps=1, per_device_train_batch_size=8, num_generations=4,
                           max_completion_length=4, logging_steps=1)

    victims = []

    def verifier(prompts, completions, **kwargs):
        if len(completions) > 1:
            victims.append(completions[2])  # the third completion of the batch trips the verifier
        if any(c is v for c in completions for v in victims):
            raise ValueError("cannot parse this answer")
        return [1.0] * len(completions)

    def per_row(prompts, completions, **kwargs):
        return [0.5] * len(completions)

    rewards = [isolate(per_row, "constant"), isolate(verifier, "verifier")]
    trainer = build_trainer(policy.model, policy.tokenizer, data.train, rewards, [1.0, 1.0], config, tmp_path, seed=0)
    trainer.model.train()
    output = trainer.score_rollouts([data.train[i] for i in range(2) for _ in range(4)])
    assert output["completion_mask"][2].sum() == 0  # no loss from the failed row
    assert output["completion_mask"][[0, 1, 3]].sum(dim=1).min() > 0
    assert output["advantages"][2] == 0
    # group statistics over rows 0, 1, 3 only: their advantages centre on zero (a fake 0.5 would not)
    assert abs(float(output["advantages"][[0, 1, 3]].sum())) < 1e-4
    assert trainer._metrics["train"]["rewards/unscored"] == [1.0]
    assert trainer._metrics["train"]["rewards/verifier/failures"] == [1.0]
    assert trainer._metrics["train"]["rewards/constant/failures"] == [0.0]
