"""Features that met each other wrongly: each test here failed on 12a626a.

- the rollout engine called the rewards without TRL's keywords (``trainer_state``, ``log_metric``);
- PPO's GAE put the reward on the wrong token when the loss mask has gaps (tools, partial rollouts);
- PPO with dynamic sampling crashed at the first refill;
- partial rollouts credited prompt-sampler successes to the wrong prompts;
- per-task budgets were skipped silently when the completions did not match the batch rows.
"""

from __future__ import annotations

import pytest
import torch

from k2rl.config import BudgetConfig, DataConfig, RolloutConfig, TrainerConfig
from k2rl.config.rl_data import DynamicSamplingConfig, SamplingConfig
from k2rl.data.sources import load_task_data
from k2rl.errors import K2RLError
from k2rl.policy.build import load_policy
from k2rl.rollouts.wiring import build_engine
from k2rl.trainer.build import build_trainer
from k2rl.trainer.dynamic_sampling import zero_variance_groups
from k2rl.trainer.losses import terminal_reward_gae

SMALL = dict(per_device_train_batch_size=4, num_generations=2, max_completion_length=6, logging_steps=1)


def _data(size=16):
    train = load_task_data(DataConfig(train_size=size, eval_size=4), seed=0).train
    return train.map(lambda row, i: {"pid": i}, with_indices=True)


def _trainer(tiny_policy_dir, tmp_path, rewards, rollout: RolloutConfig | None = None, data=None, **settings):
    policy = load_policy(str(tiny_policy_dir))
    config = TrainerConfig(**{**SMALL, "max_steps": 2, **settings})
    engine = None
    if rollout is not None:
        engine, rewards = build_engine(rollout, config, policy.tokenizer, rewards)
    return build_trainer(policy.model, policy.tokenizer, data if data is not None else _data(), rewards,
                         [1.0] * len(rewards), config, tmp_path, seed=0, rollout_func=engine)


def test_engine_rewards_get_trls_keywords_and_their_metrics_reach_the_log(tiny_policy_dir, tmp_path):
    steps = []

    def probe(prompts, completions, trainer_state=None, log_metric=None, **kwargs):
        steps.append(trainer_state.global_step)
        log_metric("probe/scored", float(len(completions)))
        return [float(i % 2) for i in range(len(completions))]

    trainer = _trainer(tiny_policy_dir, tmp_path, [probe], RolloutConfig(overlap=True, chunks=2))
    trainer.train()
    assert sorted(set(steps)) == [0, 1]  # the warm-up of a reward like k1.5_length can read the step
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 2 and all(h["probe/scored"] == 2.0 for h in logged)  # two chunks of 2 rows each


def test_gae_chains_only_the_policys_tokens_and_rewards_the_last_of_them():
    mask = torch.tensor([[1, 1, 0, 0, 1, 0]])  # two sampled tokens, a tool answer, a sampled token, padding
    values = torch.tensor([[0.5, 0.25, 9.0, 9.0, 0.75, 9.0]])
    gamma, lam = 0.9, 0.8
    advantages, returns = terminal_reward_gae(torch.tensor([1.0]), values, mask, gamma, lam)
    packed_adv, packed_ret = terminal_reward_gae(torch.tensor([1.0]), torch.tensor([[0.5, 0.25, 0.75]]),
                                                 torch.ones(1, 3), gamma, lam)
    assert torch.allclose(advantages[0, [0, 1, 4]], packed_adv[0]) and torch.allclose(returns[0, [0, 1, 4]], packed_ret[0])
    assert advantages[0, [2, 3, 5]].abs().sum() == 0 and returns[0, [2, 3, 5]].abs().sum() == 0
    assert advantages[0, 4] == pytest.approx(1.0 - 0.75)  # the reward sits on the last sampled token
    # by hand: delta_1 = 0 + gamma * V(next sampled) - V_1, chained to the last sampled token
    delta_1 = gamma * 0.75 - 0.25
    assert advantages[0, 1] == pytest.approx(delta_1 + gamma * lam * 0.25)


def test_ppo_with_dynamic_sampling_trains_on_gae_of_the_spliced_groups(tiny_policy_dir, tmp_path):
    calls = []

    def flat_then_spread(prompts, completions, **kwargs):
        calls.append(len(completions))
        return [1.0] * len(completions) if len(calls) == 1 else [float(i % 2) for i in range(len(completions))]

    trainer = _trainer(tiny_policy_dir, tmp_path, [flat_then_spread], algorithm="ppo", max_steps=1, gamma=1.0,
                       gae_lambda=1.0, dynamic_sampling=DynamicSamplingConfig(enabled=True, max_rounds=2))
    seen = []
    original = trainer.policy_loss

    def recording(model, inputs):
        seen.append({k: inputs[k].detach().clone() for k in ("returns", "completion_mask")})
        return original(model, inputs)

    trainer.policy_loss = recording
    trainer.train()
    assert trainer.state.log_history[0]["dynamic_sampling/dropped"] == 2
    returns = torch.cat([s["returns"] for s in seen])
    mask = torch.cat([s["completion_mask"] for s in seen]).bool()
    # gamma = lambda = 1: every sampled token's return is its sequence's reward, here the refill's 0/1
    per_row = [set(r[m].tolist()) for r, m in zip(returns, mask)]
    assert all(len(s) <= 1 for s in per_row)
    rewards = [next(iter(s)) if s else None for s in per_row]
    assert {r for r in rewards if r is not None} <= {0.0, 1.0} and 0.0 in rewards and 1.0 in rewards
    assert zero_variance_groups(torch.tensor([r if r is not None else -1.0 for r in rewards]), 2) == []


def test_partial_rollouts_credit_sampler_successes_to_the_prompts_they_answer(tiny_policy_dir, tmp_path):
    def even_prompts_succeed(prompts, completions, pid, **kwargs):  # the probe: reward encodes the prompt
        return [float(p % 2 == 0) for p in pid]

    trainer = _trainer(tiny_policy_dir, tmp_path, [even_prompts_succeed],
                       RolloutConfig(partial_rollouts=True, iteration_budget=3), max_steps=4,
                       sampling=SamplingConfig(method="prioritized", floor=0.05, decay=0.0))
    trainer.train()
    rates = {**trainer.prompts.success, **{i: r for update in trainer.prompts.pending for i, r in update}}
    pids = trainer.train_dataset["pid"]
    assert rates, "no group finished: the test would check nothing"
    assert trainer.state.log_history[0]["rollouts/paused_groups"] > 0  # groups really were carried
    assert all(rate == float(pids[i] % 2 == 0) for i, rate in rates.items())


def test_budgets_that_do_not_match_the_completions_are_an_error_not_skipped(tiny_policy_dir, tmp_path):
    budget = BudgetConfig(column="task", budgets={"short": 2}, default=6, penalty=0.5)
    data = _data().map(lambda row, i: {"task": "short" if i % 2 else "long"}, with_indices=True)
    trainer = _trainer(tiny_policy_dir, tmp_path, [lambda prompts, completions, **kw: [0.0] * len(completions)],
                       data=data, budget=budget)
    rows = [trainer.train_dataset[i] for i in range(2) for _ in range(2)]
    trainer.before_rollouts(rows)
    with pytest.raises(K2RLError, match="trainer.budget: 4 per-task budgets for 2 sampled completions"):
        trainer.after_sampling([[5, 6, 7], [8, 9]], None)
