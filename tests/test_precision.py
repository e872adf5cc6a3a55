"""Precision is decided in one place: float32 and no autocast on a CPU, TRL's defaults on an accelerator."""

import pytest
import torch

from k2rl.policy import precision
from k2rl.config import TrainerConfig, WarmStartConfig
from k2rl.errors import K2RLError
from k2rl.trainer.config import grpo_config as grpo_args
from k2rl.trainer.warm_start import warm_start_args


def test_cpu_trainer_precision_is_float32_without_checkpointing(monkeypatch):
    monkeypatch.setattr(precision, "on_accelerator", lambda: False)
    settings = precision.trainer_precision()
    assert settings.pop("activation_checkpointing", settings.pop("gradient_checkpointing", None)) is False
    assert settings == {"use_cpu": True, "bf16": False, "fp16": False}


def test_accelerator_keeps_trls_defaults(monkeypatch):
    monkeypatch.setattr(precision, "on_accelerator", lambda: True)
    assert precision.trainer_precision() == {}
    assert precision.policy_dtype("bfloat16") is torch.bfloat16
    assert precision.policy_dtype("auto") == "auto"


def test_cpu_policy_dtype_is_float32_and_reduced_precision_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(precision, "on_accelerator", lambda: False)
    assert precision.policy_dtype("float32") is torch.float32
    assert precision.policy_dtype("auto") is torch.float32  # a bf16 checkpoint is upcast on a CPU
    for reduced in ("bfloat16", "float16"):
        with pytest.raises(K2RLError, match=f"policy.dtype {reduced} on a CPU"):
            precision.policy_dtype(reduced)
    with pytest.raises(K2RLError, match="unknown dtype 'fp8'"):
        precision.policy_dtype("fp8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the configs a CPU run builds")
def test_every_trainer_config_built_for_cpu_is_full_precision(tmp_path):
    configs = [
        grpo_args(TrainerConfig(), [1.0], tmp_path, seed=0),
        warm_start_args(WarmStartConfig(), tmp_path, seed=0),
        warm_start_args(WarmStartConfig(), tmp_path, seed=0, long_prompts=True),
    ]
    for args in configs:
        assert (args.bf16, args.fp16, args.gradient_checkpointing, args.use_cpu) == (False, False, False, True), type(args)
