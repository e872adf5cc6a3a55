"""k2rl's vLLM engine process with real vLLM (the CPU build): after an optimizer step, the weights k2rl
pushes make vLLM sample from the adapted policy -- on DeepSeek-V3 (K2's architecture: MLA, shared
expert, sigmoid router with its score bias), Qwen3-MoE and Mixtral.

Skipped, with the reason, where the vLLM environment is not built (scripts/setup.sh builds it).
"""

from __future__ import annotations

import pytest
import torch

from k2rl.errors import K2RLError
from k2rl.experts.lora import merged_expert_adapters
from k2rl.policy.tokenizer import build_tokenizer
from k2rl.rollouts.backends import Sampling, TransformersBackend, VLLMBackend
from k2rl.rollouts.vllm_check import logprob_gap, refuse
from k2rl.rollouts.vllm_engine import VLLMEngine
from k2rl.rollouts.vllm_sync import write_engine_checkpoint
from vllm_support import needs_vllm, optimizer_step, tiny_policy

pytestmark = needs_vllm
QUESTIONS = ["What is 3 + 4?", "Sam has 12 pens and loses 5. How many are left?", "What is 20 + 22?", "Add 9 and 8."]
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def prompts(tokenizer):
    out = []
    for question in QUESTIONS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True)
        out.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    return out


@pytest.fixture(scope="module", params=["deepseek_v3", "deepseek_v3_mla576", "qwen3_moe", "mixtral"])
def pushed(request, tokenizer, tmp_path_factory):
    """``(policy, backend, pushes)``: an engine started from the base, then pushed to after one optimizer step."""
    policy = tiny_policy(request.param, tokenizer)
    out = tmp_path_factory.mktemp(request.param)
    engine = VLLMEngine(write_engine_checkpoint(policy, tokenizer, out / "checkpoint"), eos_token_ids=[tokenizer.eos_token_id],
                        max_model_len=256, max_num_seqs=8, log_path=out / "engine.log")
    engine.start()
    backend = VLLMBackend(engine, tokenizer.eos_token_id)
    pushes = [backend.push(policy)]  # every adapted weight (all B = 0 yet)
    optimizer_step(policy, tokenizer)
    pushes.append(backend.push(policy))  # the step's changes
    pushes.append(backend.push(policy))  # nothing changed since
    yield policy, backend, pushes
    engine.close()


def test_engine_runs_in_float32_with_mla_where_its_cpu_kernel_fits(pushed):
    policy, backend, _ = pushed
    assert backend.engine.info["dtype"] == "torch.float32"
    config = policy.get_base_model().config
    mla = getattr(config, "kv_lora_rank", None)
    assert backend.engine.info["mla_disabled"] == (mla is not None and mla + config.qk_rope_head_dim != 576)


def test_greedy_tokens_equal_the_adapted_policys(pushed, tokenizer):
    policy, backend, _ = pushed
    ids = prompts(tokenizer)
    ours = backend.generate(ids, [NEW_TOKENS] * len(ids), Sampling(temperature=0.0))
    reference = TransformersBackend(policy, tokenizer).generate(ids, [NEW_TOKENS] * len(ids), Sampling(temperature=0.0))
    assert [t for t, _ in ours] == [t for t, _ in reference]


def test_sampled_log_probs_match_the_adapted_policy(pushed, tokenizer):
    policy, backend, _ = pushed
    assert logprob_gap(backend, policy, prompts(tokenizer), NEW_TOKENS, temperature=1.0) <= 1e-4
    assert logprob_gap(backend, policy, prompts(tokenizer), NEW_TOKENS, temperature=0.7) <= 1e-4


def test_the_push_is_what_changed_the_engine(pushed, tokenizer):
    """Against the base weights the same check fails: the pushed adapters are what vLLM computes."""
    policy, backend, _ = pushed
    with policy.disable_adapter():
        assert logprob_gap(backend, policy, prompts(tokenizer), NEW_TOKENS) > 1e-2


def test_only_changed_tensors_move(pushed):
    _, _, (first, after_step, idle) = pushed
    assert first["tensors"] > 0 and after_step["tensors"] == first["tensors"]
    assert idle["tensors"] == 0 and "push_s" not in idle


def test_an_unsynced_weight_is_caught_and_named(tokenizer, tmp_path):
    """A step whose weights never reach the engine: the check stops the run naming the unsynced tensor."""
    policy = tiny_policy("qwen3_moe", tokenizer)
    engine = VLLMEngine(write_engine_checkpoint(policy, tokenizer, tmp_path / "checkpoint"),
                        eos_token_ids=[tokenizer.eos_token_id], max_model_len=256, max_num_seqs=8)
    with engine:
        engine.start()
        backend = VLLMBackend(engine, tokenizer.eos_token_id)
        backend.push(policy)
        first = logprob_gap(backend, policy, prompts(tokenizer), NEW_TOKENS)
        optimizer_step(policy, tokenizer)  # ... and no push
        gap = logprob_gap(backend, policy, prompts(tokenizer), NEW_TOKENS)
        with pytest.raises(K2RLError, match="unsynced tensor"):
            refuse(gap, 1e-3, engine.info, pushes=1, first_gap=first)
        with pytest.raises(K2RLError, match="refused 'push'.*no vLLM module takes"):
            engine.push({"model.layers.0.not_a_module.weight": torch.zeros(2, 2)})
        assert backend.generate(prompts(tokenizer)[:1], [4], Sampling())  # a refused request leaves the engine running


def test_a_model_vllm_cannot_load_is_one_line(tokenizer, tmp_path):
    policy = tiny_policy("mixtral", tokenizer)
    checkpoint = write_engine_checkpoint(policy, tokenizer, tmp_path / "checkpoint")
    (checkpoint / "model.safetensors").write_bytes(b"not a safetensors file")
    engine = VLLMEngine(checkpoint, eos_token_ids=[tokenizer.eos_token_id], max_model_len=256, max_num_seqs=8)
    with engine, pytest.raises(K2RLError, match=r"vLLM engine (refused 'start'|stopped during 'start').*see .*log"):
        engine.start()
    assert engine.process is None  # stopped


def test_merged_generation_is_untouched_by_pushes(pushed):
    """Pushing reads the adapters; the policy's own tensors are restored exactly afterwards."""
    policy, backend, _ = pushed
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    backend.sync.reset()
    backend.push(policy)
    with merged_expert_adapters(policy):
        pass
    assert all(torch.equal(before[n], p) for n, p in policy.named_parameters())
