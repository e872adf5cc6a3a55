"""The critic's own adapter: isolation from the policy, learning, the trainer loop, checkpoints, config errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from peft import get_peft_model

from k2rl.config import CriticConfig, DataConfig, TrainerConfig, load_config
from k2rl.critic.judge import PolicyCritic, bind_critic, wire_rubric_rewards
from k2rl.critic.adapter import CRITIC_ADAPTER, REPLAY_FILE, STATE_FILE, OwnCriticAdapter
from k2rl.critic.refinement import CriticRefinement
from k2rl.data.sources import load_task_data
from k2rl.errors import K2RLError
from k2rl.experts.lora import expert_lora_config
from k2rl.critic.replay import LabelReplay
from k2rl.policy.build import load_policy
from k2rl.rewards import build_reward_funcs, register_reward
from k2rl.rewards.answer import completion_text
from k2rl.rewards.rubric.verdict import parse_verdict
from k2rl.trainer.build import build_trainer

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "configs" / "rubrics" / "core.yaml"


@register_reward("_test_even_length_own_adapter")
def even_length(prompts, completions, **kwargs):
    """A cheap 'verifier' whose outcomes are mixed on any policy, so labelled pairs always exist."""
    return [float(len(completion_text(c)) % 2 == 0) for c in completions]


def chat(text):
    return [{"role": "user", "content": text}]


@pytest.fixture
def peft_policy(tiny_policy_dir):
    policy = load_policy(str(tiny_policy_dir))
    model = get_peft_model(policy.model, expert_lora_config(policy.model, ["routed_experts", "shared_experts"], 4, 8))
    return model, policy.tokenizer


def logits(model, tokenizer, text="What is 2 + 3?"):
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def test_replay_keeps_the_newest_comparisons_with_both_orders_together():
    refinement = CriticRefinement(weight=1.0, max_examples=4, seed=0, replay=6)  # 3 comparisons
    for batch in range(3):
        refinement.add([(chat(f"{batch}-{i}"), v) for i in range(2) for v in ("Verdict: A", "Verdict: B")])
    assert refinement.replayed == 6
    kept = {messages[0]["content"] for pair in refinement.replay_state()["recent"] for messages, _ in pair}
    assert kept == {"1-1", "2-0", "2-1"}  # the oldest made room
    drawn = refinement.draw()
    assert len(drawn) == 4
    for first, second in zip(drawn[0::2], drawn[1::2]):
        assert first[0] == second[0] and (first[1], second[1]) == ("Verdict: A", "Verdict: B")
    assert refinement(None) is None  # with a replay nothing is pending for the shared (auxiliary-loss) path
    restored = CriticRefinement(weight=1.0, max_examples=4, replay=6)
    restored.load_replay_state(json.loads(json.dumps(refinement.replay_state())))  # as a checkpoint holds it
    assert restored.replay_state() == refinement.replay_state()
    assert restored.draw() and all(isinstance(messages, list) and answer.startswith("Verdict") for messages, answer in restored.draw())


def test_reservoir_keeps_a_uniform_sample_of_everything_and_draws_half_from_it():
    replay = LabelReplay(recent=50, reservoir=200, seed=0)
    replay.add([(("old", i), ("old", i)) for i in range(2000)])  # 2000 comparisons: only the last 50 are recent
    replay.add([(("new", i), ("new", i)) for i in range(50)])
    assert replay.seen == 2050 and len(replay.recent) == 50 and len(replay.reservoir) == 200
    assert all(c[0][0] == "new" for c in replay.recent)
    kept = [c[0][1] for c in replay.reservoir if c[0][0] == "old"]
    assert len(kept) > 180  # the reservoir is mostly history
    assert 600 < sum(kept) / len(kept) < 1400 and min(kept) < 300 and max(kept) > 1700  # spread over all of it
    drawn = replay.draw(20)
    assert len(drawn) == 20 and sum(c in replay.reservoir for c in drawn) >= 10
    assert sum(c[0][0] == "new" for c in drawn) >= 10  # half from the recent part
    recent_only = LabelReplay(recent=50, seed=0)
    recent_only.add([(("old", i), ("old", i)) for i in range(2000)])
    assert {c[0][1] for c in recent_only.draw(20)} <= set(range(1950, 2000))
    restored = LabelReplay(recent=50, reservoir=200)
    restored.load_state(json.loads(json.dumps(replay.state())))
    assert json.dumps(restored.state()) == json.dumps(replay.state()) and restored.seen == 2050
    with pytest.raises(ValueError):
        LabelReplay(recent=0)


@pytest.fixture(scope="module")
def format_taught(tiny_policy_dir, worked_vs_bare):
    """The tiny policy after a few full fine-tuning steps on the verdict format with coin-flip labels
    (both letters for every comparison): it answers ``Verdict: A|B`` but prefers neither response,
    as the warm start's critic format rows leave a recipe's policy."""
    policy = load_policy(str(tiny_policy_dir))
    teacher = CriticRefinement(weight=1.0, max_examples=64, answer_prefix="Verdict:").bind(policy.tokenizer)
    rows = [(messages, verdict) for messages, _ in worked_vs_bare for verdict in ("Verdict: A", "Verdict: B")]
    optimizer = torch.optim.Adam(policy.model.parameters(), lr=3e-3)
    for _ in range(30):
        optimizer.zero_grad()
        teacher.loss(policy.model, rows).backward()
        optimizer.step()
    policy.model.requires_grad_(False)
    return policy


def test_own_adapter_learns_a_preference_and_leaves_the_policy_untouched(format_taught, worked_vs_bare):
    tokenizer = format_taught.tokenizer
    torch.manual_seed(0)
    model = get_peft_model(format_taught.model, expert_lora_config(format_taught.model, ["routed_experts", "shared_experts"], 4, 8))
    examples = worked_vs_bare[:4]  # two comparisons, both orders
    refinement = CriticRefinement(weight=1.0, max_examples=len(examples), answer_prefix="Verdict:", replay=64).bind(tokenizer)
    adapter = OwnCriticAdapter(refinement, learning_rate=2e-3, steps=10).attach(model, model.peft_config["default"])
    assert all(not p.requires_grad for p in adapter.critic_parameters)  # invisible to the policy's optimizer
    policy_state = {n: p.detach().clone() for n, p in model.named_parameters() if ".default." in n}
    policy_logits = logits(model, tokenizer)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    targets = [t.split()[-1] for _, t in examples]
    plain = PolicyCritic(max_new_tokens=3).bind(model, tokenizer)
    assert [parse_verdict(a).choice for a in plain.judge([m for m, _ in examples])] != targets

    refinement.add(examples)
    critic = PolicyCritic(max_new_tokens=3).bind(model, tokenizer, adapter.judging)
    # Refined until the loss is below what a letter-only critic can reach and the verdicts are right
    # (how many steps that takes moves with the CPU's float rounding), with a cap far above any run's.
    losses = []
    while len(losses) < 100:
        losses += [adapter.refine() for _ in range(5)]  # 50 critic steps
        if losses[-1] < 0.5 * math.log(2) and [parse_verdict(a).choice for a in critic.judge([m for m, _ in examples])] == targets:
            break
    assert losses[0] > 0.9 * math.log(2)  # letter-only critics stay at ln 2
    assert losses[-1] < 0.5 * math.log(2), f"still {losses[-1]:.3f} after {adapter.updates} critic steps"
    assert adapter.updates == 10 * len(losses)
    assert [parse_verdict(a).choice for a in critic.judge([m for m, _ in examples])] == targets

    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(torch.equal(p, policy_state[n]) for n, p in model.named_parameters() if ".default." in n)
    assert model.active_adapters == ["default"]
    assert torch.equal(logits(model, tokenizer), policy_logits)  # the policy generates as if no critic existed
    assert [parse_verdict(a).choice for a in plain.judge([m for m, _ in examples])] != targets
    with adapter.judging():
        assert model.active_adapters == ["default", CRITIC_ADAPTER]
        assert not torch.allclose(logits(model, tokenizer), policy_logits)
    model.unload()  # the module-scoped base model goes back without adapters


def test_own_adapter_with_nothing_to_learn_takes_no_step(peft_policy):
    model, tokenizer = peft_policy
    refinement = CriticRefinement(weight=1.0, max_examples=4, replay=8).bind(tokenizer)
    adapter = OwnCriticAdapter(refinement, learning_rate=1e-2, steps=3).attach(model, model.peft_config["default"])
    before = [p.detach().clone() for p in adapter.critic_parameters]
    assert adapter.refine() is None and adapter.updates == 0
    assert all(torch.equal(a, b) for a, b in zip(before, adapter.critic_parameters))


def _own_trainer(tiny_policy_dir, out_dir, max_steps):
    policy = load_policy(str(tiny_policy_dir))
    data = load_task_data(DataConfig(train_size=32, eval_size=8), seed=0)
    trainer_config = TrainerConfig(max_steps=max_steps, per_device_train_batch_size=8, num_generations=4,
                                   max_completion_length=6, logging_steps=1, learning_rate=1e-2, save_steps=1)
    critic_config = CriticConfig(pairs_per_group=2, max_new_tokens=2, refine=True, refine_max_examples=4,
                                 refine_adapter="own", refine_steps=2, refine_replay=32, refine_reservoir=16)
    specs, critic, refinement = wire_rubric_rewards(
        [{"name": "_test_even_length_own_adapter"},  # mixed outcomes, so the policy has advantages to learn from
         {"name": "rubric", "weight": 0.5, "options": {"rubrics": [str(CORE)], "verifier": "_test_even_length_own_adapter"}}],
        critic_config, trainer_config.num_generations, seed=0,
    )
    funcs, weights = build_reward_funcs(specs)
    trainer = build_trainer(policy.model, policy.tokenizer, data.train, funcs, weights, trainer_config, out_dir, seed=0)
    adapter = bind_critic(critic, refinement, critic_config, trainer, policy.tokenizer)
    return trainer, critic, adapter


def test_grpo_with_an_own_critic_adapter_trains_both_and_resumes_the_critic(tiny_policy_dir, tmp_path):
    trainer, critic, adapter = _own_trainer(tiny_policy_dir, tmp_path, max_steps=2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()

    logs = {k: v for entry in trainer.state.log_history for k, v in entry.items()}
    assert critic.calls == 2 * 2 * 2 * 2  # steps x groups x pairs x orders (one rubric)
    assert "critic/agreement" in logs and "critic/refine_loss" in logs and logs["critic/replay"] > 0
    assert adapter.updates == 2 * 2  # RL steps x refine_steps
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert any(".default." in n for n in changed) and any(f".{CRITIC_ADAPTER}." in n for n in changed)
    assert all("lora_" in n for n in changed)
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in adapter.critic_parameters}  # the policy's optimizer never steps the critic

    checkpoint = tmp_path / "checkpoint-1"
    assert (checkpoint / CRITIC_ADAPTER / "adapter_model.safetensors").is_file()
    assert (checkpoint / STATE_FILE).is_file() and (checkpoint / REPLAY_FILE.format(process=0)).is_file()

    resumed, _, resumed_adapter = _own_trainer(tiny_policy_dir, tmp_path, max_steps=2)
    resumed_adapter.load(checkpoint)
    assert resumed_adapter.updates == 2 and resumed_adapter.refinement.replayed > 0
    state = resumed_adapter.refinement.replay_state()
    assert json.dumps(state) == (checkpoint / REPLAY_FILE.format(process=0)).read_text()
    assert len(state["reservoir"]) == min(state["seen"], 8) > 0  # 16 verdicts: 8 comparisons
    saved = tmp_path / "checkpoint-2"
    final, _, final_adapter = _own_trainer(tiny_policy_dir, tmp_path, max_steps=2)
    final_adapter.load(saved)
    assert all(torch.equal(a, b) for a, b in zip(final_adapter.critic_parameters, adapter.critic_parameters))

    with pytest.raises(K2RLError, match="no critic adapter"):
        final_adapter.load(tmp_path)  # not a checkpoint of a run with an own critic adapter

    again, _, again_adapter = _own_trainer(tiny_policy_dir, tmp_path, max_steps=3)
    again.train(resume_from_checkpoint=str(saved))  # the callback restores the critic, then takes step 3
    assert again_adapter.updates == 3 * 2


def test_own_adapter_config_errors():
    with pytest.raises(K2RLError, match="rollout.overlap"):
        load_config(ROOT / "configs" / "rubric_mix.yaml", ["critic.refine_adapter=own", "rollout.overlap=true"])
    with pytest.raises(K2RLError, match="refine_steps"):
        load_config(ROOT / "configs" / "rubric_mix.yaml", ["critic.refine_adapter=own", "critic.refine_steps=0"])
    with pytest.raises(K2RLError, match="refine_adapter"):
        load_config(ROOT / "configs" / "rubric_mix.yaml", ["critic.refine_adapter=separate"])


def _two_process_refine(rank, policy_dir, port, examples, out):
    """One of two gloo processes: a differently seeded critic adapter; only rank 0 has labels."""
    import torch.distributed as dist

    torch.manual_seed(rank)  # as under TRL, where every process is seeded differently
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        policy = load_policy(policy_dir)
        model = get_peft_model(policy.model, expert_lora_config(policy.model, ["routed_experts", "shared_experts"], 4, 8))
        refinement = CriticRefinement(weight=1.0, max_examples=4, answer_prefix="Verdict:", replay=16).bind(policy.tokenizer)
        adapter = OwnCriticAdapter(refinement, learning_rate=1e-2, steps=2).attach(model, model.peft_config["default"])
        start = torch.cat([p.detach().flatten() for p in adapter.critic_parameters])
        if rank == 0:
            refinement.add(examples)
        adapter.refine()
        end = torch.cat([p.detach().flatten() for p in adapter.critic_parameters])
        torch.save({"start": start, "end": end, "updates": adapter.updates}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_own_adapter_stays_identical_across_processes(tiny_policy_dir, worked_vs_bare, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_two_process_refine, args=(str(tiny_policy_dir), port, worked_vs_bare[:4], str(tmp_path)), nprocs=2)
    first, second = (torch.load(tmp_path / f"{rank}.pt") for rank in (0, 1))
    assert torch.equal(first["start"], second["start"])  # one starting point, whatever each process drew
    assert first["updates"] == second["updates"] == 2  # the process without labels stepped too
    assert not torch.equal(first["start"], first["end"])
    assert torch.equal(first["end"], second["end"])  # averaged gradients: the critics never diverge
