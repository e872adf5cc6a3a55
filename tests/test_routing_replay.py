"""Routing replay: the training forward reuses, position by position, the experts chosen during generation."""

import pytest
import torch

from k2rl.policy.build import load_policy
from k2rl.experts.profile import moe_routers
from k2rl.experts.replay import RoutingReplay

QUESTIONS = ["What is 3 + 4?", "Sam has 12 pens and loses 5. How many are left?", "What is 20 + 22?"]


def _capture(model):
    """Hooks that keep each router's final top-k choice (after any replay hook registered earlier)."""
    seen = {}

    def hook(row):
        def record(module, args, output):
            seen[row] = output[2].detach().clone()

        return record

    handles = [router.register_forward_hook(hook(row)) for row, (_, router) in enumerate(moe_routers(model))]
    return seen, handles


def _training_batch(tokenizer, prompts, completions, extra_left_pad=3):
    """Like TRL: prompts left-padded (here wider than at generation time), completions right-padded."""
    width_p = max(len(p) for p in prompts) + extra_left_pad
    width_c = max(len(c) for c in completions)
    pad = tokenizer.pad_token_id
    ids, mask = [], []
    for p, c in zip(prompts, completions):
        ids.append([pad] * (width_p - len(p)) + p + c + [pad] * (width_c - len(c)))
        mask.append([0] * (width_p - len(p)) + [1] * (len(p) + len(c)) + [0] * (width_c - len(c)))
    return torch.tensor(ids), torch.tensor(mask)


@pytest.fixture(scope="module")
def rollout(tiny_policy_dir):
    policy = load_policy(str(tiny_policy_dir))
    model, tokenizer = policy.model, policy.tokenizer
    model.eval()
    replay = RoutingReplay(model)
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True) for q in QUESTIONS]
    tokenizer.padding_side = "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0)
    with torch.no_grad(), replay.recording():
        out = model.generate(**enc, max_new_tokens=6, do_sample=True, pad_token_id=tokenizer.pad_token_id)
    prompts = [row[m.bool()].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
    completions = []
    for row in out[:, enc["input_ids"].shape[1] :].tolist():
        cut = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        completions.append(row[:cut])
    ids, mask = _training_batch(tokenizer, prompts, completions)
    # Ground truth for the alignment: the unchanged policy's own full-sequence routing.
    seen, handles = _capture(model)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    truth = {row: idx.sort(dim=-1).values for row, idx in seen.items()}
    for handle in handles:
        handle.remove()
    return model, replay, ids, mask, truth


def _compared_positions(mask):
    """Real tokens except each row's last (never fed during generation), as flat indices."""
    keep = mask.clone()
    last = mask.shape[1] - 1 - mask.flip(1).argmax(dim=1)
    keep[torch.arange(mask.shape[0]), last] = 0
    return keep.reshape(-1).bool()


def test_replay_aligns_rollout_routing_with_training_positions(rollout):
    model, replay, ids, mask, truth = rollout
    assert len(replay.rollouts) == len(QUESTIONS)
    replay.take_mismatch()
    with torch.no_grad(), replay.replaying():
        model(input_ids=ids, attention_mask=mask)
    # Same weights: the incremental (KV-cache) routing recorded during generation is the routing the
    # full-sequence forward computes at the matching positions, so almost nothing had to be overridden.
    assert replay.take_mismatch() <= 0.02


def test_replay_restores_rollout_routing_after_the_router_drifts(rollout):
    model, replay, ids, mask, truth = rollout
    routers = [router for _, router in moe_routers(model)]
    saved = [router.weight.detach().clone() for router in routers]
    try:
        torch.manual_seed(1)
        with torch.no_grad():
            for router in routers:  # the policy moved between rollout and training
                router.weight.add_(torch.randn_like(router.weight) * router.weight.std() * 2)
        keep = _compared_positions(mask)
        seen, handles = _capture(model)
        with torch.no_grad():
            drifted_logits = model(input_ids=ids, attention_mask=mask).logits
            drifted = {row: idx.sort(dim=-1).values for row, idx in seen.items()}
            with replay.replaying():
                replayed_logits = model(input_ids=ids, attention_mask=mask).logits
                replayed = {row: idx.sort(dim=-1).values for row, idx in seen.items()}
        for handle in handles:
            handle.remove()
        for row in truth:
            assert torch.equal(replayed[row][keep], truth[row][keep])  # every compared position replayed
            assert not torch.equal(drifted[row][keep], truth[row][keep])  # and drift really changed routing
        assert replay.take_mismatch() > 0.1
        assert not torch.allclose(replayed_logits, drifted_logits)
    finally:
        with torch.no_grad():
            for router, weight in zip(routers, saved):
                router.weight.copy_(weight)


def test_gradient_checkpointing_recomputes_with_the_replayed_routing(rollout):
    """TRL trains with gradient checkpointing: backward re-runs the routers outside the replay block."""
    model, replay, ids, mask, _ = rollout
    model.train()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        with replay.replaying():
            loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
        loss.backward()  # a mismatch between forward and recomputation raises CheckpointError here
        assert model.get_output_embeddings().weight.grad is not None
    finally:
        model.gradient_checkpointing_disable()
        model.zero_grad(set_to_none=True)
        model.eval()


def test_without_a_mode_the_hooks_change_nothing(rollout):  # last: it removes the hooks
    model, replay, ids, mask, _ = rollout
    with torch.no_grad():
        hooked = model(input_ids=ids, attention_mask=mask).logits
        replay.remove()
        plain = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(hooked, plain)


def test_training_run_with_replay_logs_the_mismatch(tmp_path, request):
    """Through TRL: generation records, the loss forwards (with gradient checkpointing) replay."""
    import json

    from k2rl.cli import main

    recipe = request.config.rootpath / "configs" / "quickstart.yaml"
    fast = [
        "data.train_size=32", "data.eval_size=8", "warm_start.max_steps=5", "trainer.max_steps=2",
        "trainer.per_device_train_batch_size=8", "trainer.num_generations=4", "trainer.max_completion_length=6",
        "trainer.eval_steps=0", "trainer.logging_steps=1", "eval.max_new_tokens=6", "trainer.routing_replay=true",
    ]
    assert main(["train", str(recipe), f"output_dir={tmp_path}", "run_name=replay", *fast]) == 0
    records = [json.loads(line) for line in (tmp_path / "replay" / "metrics.jsonl").read_text().splitlines()]
    mismatch = [r["routing_replay/mismatch"] for r in records if r["phase"] == "rl" and "routing_replay/mismatch" in r]
    assert len(mismatch) == 2 and all(0.0 <= m < 0.5 for m in mismatch)


def test_forced_gating_reproduces_the_router_and_gives_given_experts_their_own_scores(tiny_policy_dir):
    from k2rl.experts.gating import forced_forward, gating_weights

    model = load_policy(str(tiny_policy_dir)).model
    torch.manual_seed(0)
    for _, router in moe_routers(model):
        with torch.no_grad():
            router.weight.normal_()
            router.e_score_correction_bias.normal_(std=0.1)  # so the choice differs from plain top-k
            hidden = torch.randn(5, 3, router.hidden_dim)
            logits, weights, indices = router(hidden)
            assert torch.equal(gating_weights(router, (hidden,), {}, indices), weights)
            other = (indices + 1) % router.weight.shape[0]
            (_, forced, chosen), calls = forced_forward(router, (hidden,), {}, other)
        assert calls == 1 and torch.equal(chosen, other)
        # DeepseekV3's definition: the chosen experts' sigmoid scores, normalised, scaled (no bias, no grouping).
        scores = logits.sigmoid().gather(1, other)
        torch.testing.assert_close(forced, scores / scores.sum(-1, keepdim=True) * router.routed_scaling_factor)


def test_routing_replay_on_a_router_it_cannot_force_is_one_clear_error(tiny_policy_dir):
    from k2rl.errors import K2RLError

    class ArgsortRouter(torch.nn.Module):  # selects without torch.topk: nothing to force
        def __init__(self, weight):
            super().__init__()
            self.weight = weight

        def forward(self, hidden):
            logits = hidden.reshape(-1, self.weight.shape[1]) @ self.weight.T
            indices = logits.argsort(dim=-1, descending=True)[:, :2]
            return logits, logits.softmax(-1).gather(1, indices), indices

    model = load_policy(str(tiny_policy_dir)).model
    layer, router = moe_routers(model)[0]
    model.model.layers[layer].mlp.gate = ArgsortRouter(router.weight)
    with pytest.raises(K2RLError, match="family 'deepseek_v3': its router ArgsortRouter does not select"):
        RoutingReplay(model)
