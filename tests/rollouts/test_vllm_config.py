"""``rollout.backend: vllm`` before anything runs: settings, the environment lookup, the MLA fallback, the
saved configs vLLM reads. No vLLM needed."""

from __future__ import annotations

import pytest

from k2rl.config import RolloutConfig
from k2rl.errors import K2RLError
from k2rl.policy.build import PRESETS, vllm_config_fields
from k2rl.rollouts.vllm_engine import VLLMEngine, mla_fallback, vllm_python
from k2rl.rollouts.wiring import vllm_args


def test_server_mode_and_bad_check_settings_are_refused():
    with pytest.raises(ValueError, match="vllm_mode: server"):
        RolloutConfig(backend="vllm", vllm_mode="server")
    with pytest.raises(ValueError, match="vllm_check_threshold"):
        RolloutConfig(backend="vllm", vllm_check_threshold=0)


def test_the_trainer_gets_tokenwise_importance_sampling_and_not_trls_vllm():
    args = vllm_args(RolloutConfig(backend="vllm"))
    assert args == {"vllm_importance_sampling_correction": True, "vllm_importance_sampling_mode": "token_truncate"}
    assert "use_vllm" not in args and vllm_args(RolloutConfig()) == {}


def test_a_missing_environment_is_one_line(tmp_path, monkeypatch):
    with pytest.raises(K2RLError, match="rollout.vllm_python: .* does not exist"):
        vllm_python(str(tmp_path / "nope" / "python"))
    monkeypatch.setenv("K2RL_VLLM_PYTHON", str(tmp_path / "missing"))
    monkeypatch.setattr("k2rl.rollouts.vllm_engine.REPO_ROOT", tmp_path)
    with pytest.raises(K2RLError, match="no vLLM environment .*scripts/setup.sh"):
        VLLMEngine(tmp_path, eos_token_ids=[2], max_model_len=64, max_num_seqs=2)


def test_mla_runs_without_vllms_cpu_kernel_unless_its_width_is_576():
    tiny = PRESETS["k2-tiny"](300, 1, 2, 0).to_dict()
    wide = PRESETS["k2-tiny-mla576"](300, 1, 2, 0).to_dict()
    assert mla_fallback(tiny, cpu=True) and not mla_fallback(wide, cpu=True)
    assert wide["kv_lora_rank"] + wide["qk_rope_head_dim"] == 576
    assert not mla_fallback(tiny, cpu=False) and not mla_fallback({"model_type": "llama"}, cpu=True)


def test_saved_k2_configs_carry_the_routing_vllm_reads():
    for preset in PRESETS.values():
        config = preset(300, 1, 2, 0).to_dict()
        assert config["topk_method"] == "noaux_tc" and config["scoring_func"] == "sigmoid"
        assert vllm_config_fields(config) == {}
    assert vllm_config_fields({"model_type": "deepseek_v3"}) == {"topk_method": "noaux_tc", "scoring_func": "sigmoid"}
    assert vllm_config_fields({"model_type": "qwen3_moe"}) == {}


def test_a_failed_check_names_the_likely_cause():
    from k2rl.rollouts.vllm_check import refuse

    refuse(5e-4, 1e-3, {"dtype": "torch.float32"}, pushes=4, first_gap=1e-6)  # under the threshold: nothing
    with pytest.raises(K2RLError, match="likely cause: dtype: the engine runs in torch.bfloat16"):
        refuse(0.7, 1e-3, {"dtype": "torch.bfloat16"}, pushes=0, first_gap=None)
    with pytest.raises(K2RLError, match="likely cause: kernel or config"):
        refuse(3.0, 1e-3, {"dtype": "torch.float32"}, pushes=0, first_gap=None)  # wrong before any training
    with pytest.raises(K2RLError, match="likely cause: unsynced tensor"):
        refuse(0.2, 1e-3, {"dtype": "torch.float32"}, pushes=3, first_gap=1e-6)  # right at start, wrong after pushes


def test_staleness_refuses_what_it_cannot_honour():
    from k2rl.config import load_config

    with pytest.raises(ValueError, match="max_staleness: 1 needs rollout.backend: vllm"):
        RolloutConfig(max_staleness=1)
    with pytest.raises(ValueError, match="partial_rollouts"):
        RolloutConfig(backend="vllm", max_staleness=1, partial_rollouts=True)
    with pytest.raises(ValueError, match="must be 0 or 1"):
        RolloutConfig(backend="vllm", max_staleness=2)
    recipe = "configs/quickstart.yaml"
    assert load_config(recipe, ["rollout.backend=vllm", "rollout.max_staleness=1"]).rollout.max_staleness == 1
    from k2rl import compat

    with pytest.raises(K2RLError, match="rollout=vllm_ahead does not compose with sampling=dynamic"):
        compat.check(load_config(recipe, ["rollout.backend=vllm", "rollout.max_staleness=1",
                                          "trainer.dynamic_sampling.enabled=true"]))
    with pytest.raises(K2RLError, match="rollout=vllm_ahead does not compose with sampling=prioritized"):
        compat.check(load_config(recipe, ["rollout.backend=vllm", "rollout.max_staleness=1",
                                          "trainer.sampling.method=prioritized"]))

    with pytest.raises(K2RLError, match="rollout=vllm does not compose with routing_replay=on"):
        compat.check(load_config(recipe, ["rollout.backend=vllm", "trainer.routing_replay=true"]))
    with pytest.raises(K2RLError, match="rollout=vllm does not compose with processes=2"):
        compat.check(load_config(recipe, ["rollout.backend=vllm"]), num_processes=2)
