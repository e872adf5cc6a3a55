"""The self-critic with the real tiny policy: weak judgments, exact mechanics; recipe wiring; refinement."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from k2rl.config import CriticConfig, DataConfig, TrainerConfig, load_config
from k2rl.critic.judge import PolicyCritic, bind_critic, wire_rubric_rewards
from k2rl.critic.refinement import CriticRefinement
from k2rl.data.sources import load_task_data
from k2rl.errors import K2RLError
from k2rl.policy.build import load_policy
from k2rl.rewards import build_reward_funcs, get_reward, register_reward
from k2rl.rewards.answer import completion_text
from k2rl.rewards.rubric import load_rubric
from k2rl.rewards.rubric.prompt import critic_messages
from k2rl.rewards.rubric.verdict import parse_verdict
from k2rl.trainer.build import build_trainer

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "configs" / "rubrics" / "core.yaml"
PRESCRIPTIVE = ROOT / "configs" / "rubrics" / "prescriptive.yaml"


@register_reward("_test_even_length")
def even_length(prompts, completions, **kwargs):
    """A cheap 'verifier' whose outcomes are mixed on any policy, so labelled pairs always exist."""
    return [float(len(completion_text(c)) % 2 == 0) for c in completions]


class Recording:
    """Wraps a critic and keeps its answers, to check the reward's bookkeeping against them."""

    def __init__(self, critic):
        self.critic, self.answers = critic, []

    def judge(self, conversations):
        answers = self.critic.judge(conversations)
        self.answers.extend(answers)
        return answers


@pytest.fixture(scope="module")
def policy(tiny_policy_dir):
    return load_policy(str(tiny_policy_dir))


def chat(text):
    return [{"role": "user", "content": text}]


def test_tiny_policy_as_critic_exact_mechanics(policy):
    critic = PolicyCritic(max_new_tokens=3, batch_size=16).bind(policy.model, policy.tokenizer)
    recording = Recording(critic)
    prompts = [chat("What is 2 + 3?")] * 4 + [chat("What is 9 - 4?")] * 4
    completions = [[{"role": "assistant", "content": f"The answer is {n}."}] for n in (5, 6, 5, 1, 5, 5, 2, 13)]
    metrics = {}
    reward = get_reward("rubric", critic=recording, rubrics=[str(CORE), str(PRESCRIPTIVE)], pairs_per_group=2,
                        group_size=4, verifier="exact_answer")
    scores = reward(prompts=prompts, completions=completions, answer=["5"] * 8,
                    log_metric=lambda k, v: metrics.setdefault(k, []).append(v))

    assert critic.calls == len(recording.answers) == 2 * 2 * 2 * 2  # groups x pairs x orders x rubrics
    assert all(a.startswith("Verdict:") for a in recording.answers)  # the prefilled start of the answer
    verdicts = [parse_verdict(a) for a in recording.answers]
    assert metrics["rubric/judgements"] == [16.0]
    assert metrics["rubric/abstentions"] == [float(sum(not v.decided for v in verdicts))]
    assert metrics["rubric/unscored"] == [float(sum(s is None for s in scores))]
    assert all(s is None or -1.0 <= s <= 1.0 for s in scores)
    if "critic/agreement" in metrics:
        assert 0.0 <= metrics["critic/agreement"][0] <= 1.0
    # Greedy decoding and seeded pairs: the same batch gets the same scores.
    assert reward(prompts=prompts, completions=completions, answer=["5"] * 8) == scores


def train_critic(refinement, model, examples, steps, lr=3e-3, optimizer=None):
    """``steps`` Adam steps on the refinement loss of ``examples`` (re-added each step); the losses."""
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        refinement.add(examples)
        loss = refinement(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def train_critic_until(refinement, model, examples, bound, max_steps, lr=3e-3, check_every=10):
    """Adam steps on the refinement loss until it stays below ``bound`` (or ``max_steps``); the losses."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    while len(losses) < max_steps:
        losses += train_critic(refinement, model, examples, steps=check_every, optimizer=optimizer)
        if max(losses[-3:]) < bound:
            break
    return losses


def test_refinement_loss_teaches_the_verdict_format(policy, tiny_policy_dir):
    model = load_policy(str(tiny_policy_dir)).model  # a private copy: this test trains it
    tokenizer = policy.tokenizer
    rubric = load_rubric(CORE)
    examples = [
        (critic_messages(chat("What is 2 + 3?"), "The answer is 5.", "The answer is 7.", rubric), "Verdict: A"),
        (critic_messages(chat("What is 2 + 3?"), "The answer is 7.", "The answer is 5.", rubric), "Verdict: B"),
    ]
    refinement = CriticRefinement(weight=1.0, max_examples=8, answer_prefix="Verdict:").bind(tokenizer)
    assert refinement(model) is None  # nothing pending: no loss
    losses = train_critic(refinement, model, examples, steps=12)
    assert refinement(model) is None  # each batch of labels trains once
    assert losses[-1] < 0.5 * losses[0]
    critic = PolicyCritic(max_new_tokens=3).bind(model, tokenizer)
    assert all(parse_verdict(a).decided for a in critic.judge([m for m, _ in examples]))


def test_grpo_with_rubric_reward_and_critic_refinement(tiny_policy_dir, tmp_path):
    policy = load_policy(str(tiny_policy_dir))
    data = load_task_data(DataConfig(train_size=32, eval_size=8), seed=0)
    trainer_config = TrainerConfig(max_steps=2, per_device_train_batch_size=8, num_generations=4,
                                   max_completion_length=6, logging_steps=1, learning_rate=1e-2)
    critic_config = CriticConfig(pairs_per_group=2, max_new_tokens=2, refine=True, refine_weight=1.0, refine_max_examples=4)
    specs, critic, refinement = wire_rubric_rewards(
        [{"name": "exact_answer"}, {"name": "rubric", "weight": 0.5,
                                    "options": {"rubrics": [str(CORE)], "verifier": "_test_even_length"}}],
        critic_config, trainer_config.num_generations, seed=0,
    )
    funcs, weights = build_reward_funcs(specs)
    trainer = build_trainer(policy.model, policy.tokenizer, data.train, funcs, weights, trainer_config, tmp_path, seed=0,
                            auxiliary_losses=[refinement])
    bind_critic(critic, refinement, critic_config, trainer, policy.tokenizer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()

    logs = {k: v for entry in trainer.state.log_history for k, v in entry.items()}
    assert critic.calls == 2 * 2 * 2 * 2  # steps x groups x pairs x orders (one rubric)
    assert logs["rubric/judgements"] == 8.0
    assert "critic/agreement" in logs and "critic/refine_loss" in logs
    assert refinement.trained_examples > 0
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and all("lora_" in n for n in changed)  # the critic learns through the policy's adapters


def test_wiring_binds_the_critic_and_fails_early_on_bad_recipes(tmp_path):
    rubric_spec = {"name": "rubric", "options": {"rubrics": [str(CORE)], "verifier": "exact_answer"}}
    specs, critic, refinement = wire_rubric_rewards([{"name": "exact_answer"}, rubric_spec], CriticConfig(), 8, 0)
    options = specs[1]["options"]
    assert options["critic"] is critic and options["group_size"] == 8 and options["pairs_per_group"] == 4
    assert options["rubrics"][0].kind == "core" and refinement is None and "refiner" not in options
    assert wire_rubric_rewards([{"name": "exact_answer"}], CriticConfig(refine=True), 8, 0)[1:] == (None, None)

    with pytest.raises(K2RLError, match="rubric file not found"):
        wire_rubric_rewards([{"name": "rubric", "options": {"rubrics": ["nope.yaml"]}}], CriticConfig(), 8, 0)
    with pytest.raises(K2RLError, match="needs the rubric reward's `verifier` option"):
        wire_rubric_rewards([{"name": "rubric", "options": {"rubrics": [str(CORE)]}}], CriticConfig(refine=True), 8, 0)
    with pytest.raises(K2RLError, match="needs critic.model: policy"):
        wire_rubric_rewards([rubric_spec], CriticConfig(refine=True, model=str(tmp_path)), 8, 0)


def test_rubric_mix_recipe_validates():
    config = load_config(ROOT / "configs" / "rubric_mix.yaml", ["critic.pairs_per_group=2"])
    assert config.critic.refine and config.critic.refine_adapter == "own" and config.critic.pairs_per_group == 2
    assert [r.name for r in config.rewards] == ["exact_answer", "rubric"]
    with pytest.raises(K2RLError, match="unknown key 'critic.pairs'"):
        load_config(ROOT / "configs" / "rubric_mix.yaml", ["critic.pairs=2"])


def test_verdict_format_rows_teach_the_format_not_the_judgment(policy, tiny_policy_dir, tmp_path):
    from k2rl.config import WarmStartConfig
    from k2rl.critic.format_rows import verdict_format_rows
    from k2rl.rewards.rubric import load_rubrics
    from k2rl.trainer.warm_start import warm_start

    data = load_task_data(DataConfig(train_size=64, eval_size=8), seed=0)
    specs = [{"name": "exact_answer"}, {"name": "rubric", "options": {"rubrics": load_rubrics([str(CORE)])}}]
    rows = verdict_format_rows(data.train, specs, 200, seed=0)
    assert len(rows) == 200
    gold_first, ties = [], 0
    for row in rows:
        target = row["completion"][0]["content"]
        body = row["prompt"][-1]["content"]
        a, b = body.split("Response A:\n", 1)[1].split("\n\nResponse B:\n")
        if target == "Verdict: tie":  # one response shown twice: a tie under any rubric, no preference
            assert a == b
            ties += 1
            continue
        assert target in ("Verdict: A", "Verdict: B") and a != b
        gold_first.append((body.index("Response B:") > body.index(f"is {_gold(body, data)}."), target))
    # Coin-flip labels: each label appears with the gold answer on either side.
    assert {(True, "Verdict: A"), (True, "Verdict: B"), (False, "Verdict: A"), (False, "Verdict: B")} <= set(gold_first)
    assert 0.15 < ties / len(rows) < 0.35
    assert verdict_format_rows(data.train, specs, 0, 0) is None
    assert verdict_format_rows(data.train, [{"name": "exact_answer"}], 10, 0) is None

    model = load_policy(str(tiny_policy_dir)).model
    config = WarmStartConfig(max_steps=2, batch_size=4)
    warm_start(model, policy.tokenizer, data.train, config, tmp_path, seed=0, extra_rows=rows)  # long rows fit


def _gold(body, data):
    question = body.split("Request:\n", 1)[1].split("\n\nResponse A:", 1)[0]
    return dict(zip(data.train["question"], data.train["answer"]))[question]


def test_refinement_keeps_both_orders_of_a_comparison_together():
    examples = [([chat(f"pair {i}")], verdict) for i in range(10) for verdict in ("Verdict: A", "Verdict: B")]
    refinement = CriticRefinement(weight=1.0, max_examples=6, seed=0)
    refinement.add(examples)
    pending = refinement._pending
    assert len(pending) == 6
    for first, second in zip(pending[0::2], pending[1::2]):  # subsampled by comparison, never by order
        assert first[0] == second[0] and (first[1], second[1]) == ("Verdict: A", "Verdict: B")


def test_refinement_learns_a_preference_beyond_position_with_the_real_tiny_policy(policy, tiny_policy_dir, worked_vs_bare):
    """Both orders of each comparison, so a critic that only picks a letter stays at ln 2 per verdict;
    the loss goes well below it only when the critic reads which response is which."""
    model = load_policy(str(tiny_policy_dir)).model
    tokenizer = policy.tokenizer
    examples = worked_vs_bare
    refinement = CriticRefinement(weight=1.0, max_examples=len(examples), answer_prefix="Verdict:").bind(tokenizer)
    bound = 0.5 * torch.log(torch.tensor(2.0)).item()  # letter-only critics cannot get here
    # Trained until the bound holds (how many steps that takes moves with the CPU's float rounding),
    # with a cap far above what any machine needed.
    losses = train_critic_until(refinement, model, examples, bound, max_steps=400)
    assert losses[-1] < bound, f"still {losses[-1]:.3f} after {len(losses)} steps"
    critic = PolicyCritic(max_new_tokens=3).bind(model, tokenizer)
    answers = critic.judge([m for m, _ in examples])
    assert [parse_verdict(a).choice for a in answers] == [t.split()[-1] for _, t in examples]
