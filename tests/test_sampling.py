"""Prioritized and curriculum prompt sampling: probabilities by hand, same draws everywhere, exact resume."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import BatchSampler

from k2rl.config import load_config
from k2rl.config.rl_data import SamplingConfig
from k2rl.errors import K2RLError
from k2rl.trainer.sampling import STATE_FILE, PromptSampler, SamplerCheckpoint

PRIORITIZED = SamplingConfig(method="prioritized", floor=0.1, decay=0.5)


def _observe(sampler, k, by_index):
    """Feed round k's successes given per prompt index (in the chunk's order, as TRL gathers them)."""
    chunk = sampler.chunk(k)
    sampler.observe([s for i in chunk for s in by_index[i]], [i for i in chunk for _ in by_index[i]])


def test_prioritized_probabilities_after_known_updates():
    sampler = PromptSampler(3, mini_repeat_count=2, batch_size=3, repeat_count=1, seed=0, config=PRIORITIZED)
    assert sampler.probabilities(0) == pytest.approx([1 / 3] * 3)
    _observe(sampler, 0, {0: [1, 1], 1: [1, 0], 2: [0, 0]})  # rates 1.0, 0.5, 0.0
    assert sampler.probabilities(1) == pytest.approx([1 / 3] * 3)  # chunk 1 sees rounds <= -1: nothing yet
    # chunk 2 sees round 0: weights max(0.1, 1 - s) = 0.1, 0.5, 1.0 (sum 1.6)
    assert sampler.probabilities(2) == pytest.approx([0.0625, 0.3125, 0.625])
    sampler.chunk(1)
    _observe(sampler, 1, {0: [0, 0], 1: [1, 1], 2: [0, None]})  # EMA: 0.5*1+0.5*0, 0.5*0.5+0.5*1, 0 (None left out)
    assert sampler.probabilities(2) == pytest.approx([0.0625, 0.3125, 0.625])  # unchanged: still rounds <= 0
    # chunk 3 sees rounds 0 and 1: rates 0.5, 0.75, 0.0 -> weights 0.5, 0.25, 1.0 (sum 1.75)
    assert sampler.probabilities(3) == pytest.approx([2 / 7, 1 / 7, 4 / 7])


def test_curriculum_grows_the_pool_from_easy_to_hard():
    config = SamplingConfig(method="curriculum", start_fraction=0.5, curriculum_steps=2)
    sampler = PromptSampler(4, 1, 1, 1, seed=0, config=config, difficulty=[0.9, 0.1, 0.5, 0.3])
    assert sampler.probabilities(0) == pytest.approx([0, 0.5, 0, 0.5])  # the easiest half: prompts 1 and 3
    assert sampler.probabilities(1) == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3])  # 3 of 4 (ceil(0.75 * 4))
    assert sampler.probabilities(5) == pytest.approx([0.25] * 4)
    assert all(sampler.chunk(0)[0] in (1, 3) for _ in range(3))
    with pytest.raises(K2RLError, match="difficulty"):
        PromptSampler(4, 1, 1, 1, seed=0, config=config, difficulty=None)


def _successes(index):
    return [float(index % 3 == 0), float(index % 2 == 0)]


def test_two_ranks_draw_the_same_prompts_whenever_they_ask():
    """Two processes (one prefetching a batch ahead, one not) walk identical chunks and split each one."""
    ranks = [PromptSampler(24, 2, 4, 1, seed=7, config=PRIORITIZED) for _ in range(2)]
    shards = [iter(BatchSamplerShard(BatchSampler(s, 4, drop_last=False), num_processes=2, process_index=p))
              for p, s in enumerate(ranks)]
    ahead = next(shards[0])  # rank 0 prefetches like accelerate's DataLoaderShard
    for k in range(5):
        batch0, ahead = ahead, next(shards[0])
        batch1 = next(shards[1])
        chunk = ranks[0].chunk(k)
        assert batch0 + batch1 == [i for i in chunk for _ in range(2)]  # each rank its half of one round
        assert ranks[1].chunk(k) == chunk
        for sampler in ranks:
            _observe(sampler, k, {i: _successes(i) for i in chunk})
    assert ranks[0].state_dict() == ranks[1].state_dict()
    assert ranks[0].probabilities(6) != pytest.approx([1 / 24] * 24)  # the updates did change the weights


def test_state_round_trips_through_a_checkpoint_and_resumes_the_same_draws(tmp_path):
    def sampler():
        return PromptSampler(12, 2, 2, 1, seed=3, config=PRIORITIZED)

    whole = sampler()
    walk = iter(whole)
    drawn = []
    for k in range(6):
        drawn.append([next(walk) for _ in range(4)])
        _observe(whole, k, {i: _successes(i) for i in whole.chunk(k)})
        if k == 2:  # checkpoint after round 2, with chunk 3 maybe already prefetched
            (tmp_path / "checkpoint-3").mkdir()
            SamplerCheckpoint(lambda: whole).on_save(SimpleNamespace(output_dir=str(tmp_path)),
                                                   SimpleNamespace(global_step=3, is_world_process_zero=True), None)
    assert (tmp_path / "checkpoint-3" / STATE_FILE).is_file()

    resumed = sampler()
    SamplerCheckpoint(lambda: resumed).on_train_begin(SimpleNamespace(output_dir=str(tmp_path)),
                                                      SimpleNamespace(global_step=3), None)
    assert resumed.observed == 3
    walk = iter(resumed)
    skipped = [next(walk) for _ in range(3 * 4)]  # what the HF Trainer skips on resume: placeholders
    assert skipped == [0] * 12
    for k in range(3, 6):
        assert [next(walk) for _ in range(4)] == drawn[k]
        _observe(resumed, k, {i: _successes(i) for i in resumed.chunk(k)})
    assert resumed.state_dict() == whole.state_dict()


def test_a_chunk_too_far_ahead_is_a_bug_not_a_silent_guess():
    sampler = PromptSampler(4, 1, 1, 1, seed=0, config=PRIORITIZED)
    with pytest.raises(RuntimeError, match="before round 0 was observed"):
        sampler.chunk(2)


@pytest.mark.parametrize("override, message", [
    ("trainer.sampling.method=greedy", "trainer.sampling.method: expected one of"),
    ("trainer.sampling.floor=0", r"trainer.sampling.floor must be in \(0, 1\]"),
    ("trainer.sampling.decay=1.0", r"trainer.sampling.decay must be in \[0, 1\)"),
    ("trainer.sampling.temperature=1", "unknown key 'trainer.sampling.temperature'"),
])
def test_bad_sampling_settings_are_one_line(override, message):
    with pytest.raises(K2RLError, match=message) as info:
        load_config("configs/quickstart.yaml", [override])
    assert "\n" not in str(info.value)


def _prompt_order(out_dir):
    from k2rl.trainer.checkpointing import DATA_ORDER
    import json

    lines = (out_dir / DATA_ORDER).read_text().splitlines()
    return {r["step"]: r["prompts"] for r in map(json.loads, lines)}


def test_trl_trains_on_the_prioritized_draws_and_a_resume_draws_the_same(tiny_policy_dir, tmp_path):
    """Through the real HF/TRL loop (prefetching dataloader, batch skipping on resume)."""
    from k2rl.config import DataConfig, TrainerConfig
    from k2rl.data.sources import load_task_data
    from k2rl.policy.build import load_policy
    from k2rl.trainer.build import build_trainer

    data = load_task_data(DataConfig(train_size=16, eval_size=4), seed=0)
    config = TrainerConfig(max_steps=4, per_device_train_batch_size=4, num_generations=2, max_completion_length=3,
                           logging_steps=1, save_steps=1, save_total_limit=10,
                           sampling=SamplingConfig(method="prioritized", floor=0.05, decay=0.0))

    def by_prompt(prompts, completions, **kwargs):  # success depends on the prompt only: prompts move weight
        return [float(len(str(p)) % 2) for p in prompts]

    def trainer(out):
        policy = load_policy(str(tiny_policy_dir))
        return build_trainer(policy.model, policy.tokenizer, data.train, [by_prompt], [1.0], config, out, seed=0)

    whole = trainer(tmp_path / "whole")
    whole.train()
    drawn = _prompt_order(tmp_path / "whole")
    assert sorted(drawn) == [1, 2, 3, 4] and whole.prompts.observed == 4
    assert (tmp_path / "whole" / "checkpoint-2" / STATE_FILE).is_file()

    resumed = trainer(tmp_path / "whole")  # same output_dir: continues from checkpoint-2
    (tmp_path / "whole" / "data_order.jsonl").unlink()
    resumed.train(resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-2"))
    assert _prompt_order(tmp_path / "whole") == {3: drawn[3], 4: drawn[4]}
    assert resumed.prompts.state_dict() == whole.prompts.state_dict()
