"""The K2 recipe's loss arithmetic, schedules and budgets against hand computations on a few numbers."""

import math

import pytest
import torch

from k2rl.config import BudgetConfig
from k2rl.errors import K2RLError
from k2rl.trainer.losses import clipped_value_loss, k2_policy_loss, lm_loss, terminal_reward_gae, whiten
from k2rl.trainer.ptx import PtxBatches
from k2rl.rewards import get_reward
from k2rl.trainer.temperature import check_temperatures, temperature_at
from k2rl.rollouts.budget import check_budget_config, cut_to_budgets, row_budgets


def test_k2_policy_loss_by_hand():
    logps = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -0.5, -0.5]], requires_grad=True)
    old = torch.tensor([[-1.5, -1.0, -3.0], [-0.5, -1.0, -1.5]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    centered = torch.tensor([0.5, -0.5])
    # row 0: log ratio 0.5 - 1.0 = -0.5 (third token masked); (0.5 - 0.2 * -0.5)^2 = 0.6^2 = 0.36
    # row 1: log ratio 0 + 0.5 + 1.0 = 1.5; (-0.5 - 0.2 * 1.5)^2 = 0.8^2 = 0.64
    loss = k2_policy_loss(logps, old, centered, mask, tau=0.2)
    assert loss.item() == pytest.approx((0.36 + 0.64) / 2)
    loss.backward()
    # d/dlogp of (c - tau * s)^2 / B = -2 * tau * (c - tau * s) / B on every unmasked token
    expected = torch.tensor([[-0.2 * 0.6, -0.2 * 0.6, 0.0], [0.2 * 0.8, 0.2 * 0.8, 0.2 * 0.8]])
    assert torch.allclose(logps.grad, expected)


def test_k2_policy_loss_on_policy_is_a_policy_gradient():
    logps = torch.tensor([[-1.0, -2.0], [-3.0, -0.5]], requires_grad=True)
    centered = torch.tensor([1.0, -1.0])
    loss = k2_policy_loss(logps, logps.detach(), centered, torch.ones(2, 2), tau=0.5)
    assert loss.item() == pytest.approx(1.0)  # mean of (r - mean_r)^2
    loss.backward()
    assert torch.allclose(logps.grad, torch.tensor([[-0.5, -0.5], [0.5, 0.5]]))  # -2 tau A / B


def test_gae_with_terminal_reward_by_hand():
    values = torch.tensor([[0.5, 0.2, 0.1], [0.3, 0.4, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    rewards = torch.tensor([1.0, 0.0])
    gamma, lam = 0.9, 0.8
    advantages, returns = terminal_reward_gae(rewards, values, mask, gamma, lam)
    # row 0: deltas 0 + .9*.2 - .5 = -.32, 0 + .9*.1 - .2 = -.11, 1 - .1 = .9
    a2 = 0.9
    a1 = -0.11 + 0.72 * a2
    a0 = -0.32 + 0.72 * a1
    # row 1 (two tokens, reward 0; the masked value 7.0 must not leak in): deltas .9*.4 - .3 = .06, -.4
    b1 = -0.4
    b0 = 0.06 + 0.72 * b1
    assert torch.allclose(advantages, torch.tensor([[a0, a1, a2], [b0, b1, 0.0]]), atol=1e-6)
    assert torch.allclose(returns, torch.tensor([[a0 + 0.5, a1 + 0.2, a2 + 0.1], [b0 + 0.3, b1 + 0.4, 0.0]]), atol=1e-6)


def test_gae_lambda_one_gamma_one_is_reward_minus_value():
    values = torch.tensor([[0.25, 0.5, 0.75]])
    advantages, returns = terminal_reward_gae(torch.tensor([2.0]), values, torch.ones(1, 3), 1.0, 1.0)
    assert torch.allclose(advantages, 2.0 - values)
    assert torch.allclose(returns, torch.full((1, 3), 2.0))


def test_clipped_value_loss_by_hand():
    values = torch.tensor([[1.0, 0.0, 5.0]])
    old = torch.tensor([[0.5, 0.0, 0.0]])
    returns = torch.tensor([[0.0, 1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    # token 0: unclipped (1-0)^2 = 1, clipped to 0.5+0.2=0.7 -> 0.49; max 1
    # token 1: v = old, both (0-1)^2 = 1
    assert clipped_value_loss(values, old, returns, mask, 0.2).item() == pytest.approx(0.5 * (1 + 1) / 2)
    # the clip binds when it is the worse of the two: moving away from the return
    values = torch.tensor([[0.1]])
    # unclipped (0.1 - 1)^2 = 0.81, clipped 0.5 - 0.2 = 0.3 -> 0.49; max 0.81
    assert clipped_value_loss(values, torch.tensor([[0.5]]), torch.tensor([[1.0]]), torch.ones(1, 1), 0.2).item() == (
        pytest.approx(0.5 * 0.81)
    )
    values = torch.tensor([[2.0]])
    # unclipped (2 - 1.5)^2 = 0.25; clipped 0.5 + 0.2 = 0.7 -> 0.64; max 0.64 (pessimistic)
    assert clipped_value_loss(values, torch.tensor([[0.5]]), torch.tensor([[1.5]]), torch.ones(1, 1), 0.2).item() == (
        pytest.approx(0.5 * 0.64)
    )


def test_whiten_ignores_padding():
    values = torch.tensor([[1.0, 3.0, 100.0]])
    out = whiten(values, torch.tensor([[1, 1, 0]]))
    assert torch.allclose(out, torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-4)


def test_lm_loss_and_ptx_batches():
    assert lm_loss(torch.tensor([[-1.0, -3.0, -50.0]]), torch.tensor([[1, 1, 0]])).item() == pytest.approx(2.0)
    examples = [([5, 6, 7], [0, 1, 1]), ([8, 9], [1, 1]), ([4], [1])]  # the last has nothing to predict
    batches = PtxBatches(examples, pad_id=0, batch_size=3, seed=0)
    ids, attention, loss_mask = batches.next("cpu")
    rows = {tuple(r[a.bool()].tolist()) for r, a in zip(ids, attention)}
    assert rows <= {(5, 6, 7), (8, 9)} and len(rows) == 2  # an epoch of 2 usable rows, then the next
    for r, a, m in zip(ids, attention, loss_mask):
        assert (r[~a.bool()] == 0).all() and (m[~a.bool()] == 0).all()
    with pytest.raises(K2RLError, match="no usable rows"):
        PtxBatches([([4], [1])], pad_id=0, batch_size=2, seed=0)


@pytest.mark.parametrize(
    ("kind", "step", "expected"),
    [
        ("constant", 5, 1.2),
        ("linear", 0, 1.2),
        ("linear", 5, 0.9),
        ("linear", 10, 0.6),
        ("linear", 99, 0.6),
        ("cosine", 0, 1.2),
        ("cosine", 5, 0.9),
        ("cosine", 10, 0.6),
    ],
)
def test_temperature_schedule_values(kind, step, expected):
    assert temperature_at(step, 11, 1.2, 0.6, kind) == pytest.approx(expected)


def test_cosine_schedule_stays_hot_longer_than_linear():
    assert temperature_at(2, 11, 1.2, 0.6, "cosine") == pytest.approx(1.2 - 0.6 * 0.5 * (1 - math.cos(math.pi * 0.2)))
    assert temperature_at(2, 11, 1.2, 0.6, "cosine") > temperature_at(2, 11, 1.2, 0.6, "linear")


def test_temperature_config_errors():
    with pytest.raises(K2RLError, match="temperature_end"):
        check_temperatures(1.0, None, "linear")
    with pytest.raises(K2RLError, match="positive"):
        check_temperatures(1.0, 0.0, "linear")
    with pytest.raises(K2RLError, match="one of"):
        check_temperatures(1.0, 0.5, "exponential")


def test_row_budgets_and_cutting():
    config = BudgetConfig(column="task", budgets={"math": 3}, default=5, penalty=0.5)
    rows = [{"task": "math"}, {"task": "code"}, {"task": "math"}, {"task": "math"}]
    budgets = row_budgets(rows, config)
    assert budgets == [3, 5, 3, 3]
    eos = 2
    completions = [[7, 7, 7, 7, eos], [7, 7, eos], [7, 7, eos], [7, 7, 7]]
    logprobs = [[-1.0] * 5, [-2.0] * 3, [-3.0] * 3, [-4.0] * 3]
    ids, lps, exceeded = cut_to_budgets(completions, logprobs, budgets, [eos])
    assert ids == [[7, 7, 7], [7, 7, eos], [7, 7, eos], [7, 7, 7]]
    assert [len(x) for x in lps] == [3, 3, 3, 3]
    # ran past; finished early; finished exactly at the budget; filled the budget without stopping
    assert exceeded == [True, False, False, True]
    assert row_budgets([{"task": "code"}], BudgetConfig(column="task", budgets={"math": 3})) == [None]
    assert cut_to_budgets([[7] * 9], None, [None], [eos]) == ([[7] * 9], None, [False])


def test_budget_config_errors_and_penalty_reward():
    with pytest.raises(K2RLError, match="max_completion_length"):
        check_budget_config(BudgetConfig(column="task", budgets={"math": 40}), max_completion_length=16)
    with pytest.raises(K2RLError, match="neither"):
        check_budget_config(BudgetConfig(column="task"), max_completion_length=16)
    with pytest.raises(K2RLError, match="not a column"):
        row_budgets([{"question": "?"}], BudgetConfig(column="task", default=4))
    penalty = get_reward("budget_exceeded", penalty=0.25)
    assert penalty(["p", "p"], ["c", "c"], budget_exceeded=[True, False]) == [-0.25, 0.0]
    with pytest.raises(K2RLError, match="trainer.budget"):
        penalty(["p"], ["c"])
