"""`trainer.trl` / `warm_start.trl`: any GRPOConfig / SFTConfig field, checked by name and type; fields
k2rl sets from its own keys are refused with the key to use."""

from __future__ import annotations

import pytest

from k2rl.config import TrainerConfig, WarmStartConfig
from k2rl.errors import K2RLError
from k2rl.trainer.config import grpo_config
from k2rl.trainer.warm_start import warm_start_args


def test_any_grpo_field_reaches_the_one_config(tmp_path):
    trl = {"top_p": 0.9, "top_k": 20, "repetition_penalty": 1.1, "mask_truncated_completions": True,
           "lr_scheduler_type": "cosine", "weight_decay": 0.01, "steps_per_generation": 2,
           "vllm_gpu_memory_utilization": 0.5}
    args = grpo_config(TrainerConfig(trl=trl), [1.0], tmp_path, seed=0)
    assert (args.top_p, args.top_k, args.repetition_penalty, args.mask_truncated_completions) == (0.9, 20, 1.1, True)
    assert args.lr_scheduler_type == "cosine" and args.weight_decay == 0.01
    assert args.steps_per_generation == 2 and args.generation_batch_size == 2 * 32
    assert args.vllm_gpu_memory_utilization == 0.5
    default = grpo_config(TrainerConfig(), [1.0], tmp_path, seed=0)
    assert default.lr_scheduler_type == "constant_with_warmup" and default.top_p == 1.0  # k2rl's default stands


def test_any_sft_field_reaches_the_warm_start(tmp_path):
    args = warm_start_args(WarmStartConfig(trl={"weight_decay": 0.1, "lr_scheduler_type": "linear", "max_length": 64}),
                           tmp_path, seed=0)
    assert args.weight_decay == 0.1 and args.lr_scheduler_type == "linear" and args.max_length == 64
    assert warm_start_args(WarmStartConfig(), tmp_path, seed=0).lr_scheduler_type == "cosine"


@pytest.mark.parametrize(("trl", "message"), [
    ({"num_generations": 4}, "trainer.trl.num_generations: k2rl sets num_generations itself; use trainer.num_generations"),
    ({"reward_weights": [1.0]}, "use rewards[].weight instead"),
    ({"budget": {"column": "task"}}, "use trainer.budget instead"),
    ({"tau": 0.5}, "use trainer.tau instead"),
    ({"report_to": ["tensorboard"]}, "use report_to (run level) instead"),
    ({"bf16": True}, "use policy.dtype"),
    ({"use_vllm": True}, "use rollout.backend instead"),
    ({"topp": 0.9}, "GRPOConfig has no field 'topp' (did you mean top_p?)"),
    ({"top_k": 2.5}, "trainer.trl.top_k: expected an integer, got float 2.5"),
    ({"lr_scheduler_type": "sideways"}, "trainer.trl.lr_scheduler_type: expected one of 'linear', 'cosine'"),
    ({"mask_truncated_completions": "yes"}, "trainer.trl.mask_truncated_completions: expected bool"),
    ({"auto_find_batch_size": True}, "trainer.trl: K2GRPOConfig rejects the settings: auto_find_batch_size is not supported"),
])
def test_bad_grpo_options_are_one_line(tmp_path, trl, message):
    with pytest.raises(K2RLError) as caught:
        grpo_config(TrainerConfig(trl=trl), [1.0], tmp_path, seed=0)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_bad_sft_options_are_one_line(tmp_path):
    with pytest.raises(K2RLError, match="warm_start.trl.per_device_train_batch_size: .* use warm_start.batch_size"):
        warm_start_args(WarmStartConfig(trl={"per_device_train_batch_size": 4}), tmp_path, seed=0)
    with pytest.raises(K2RLError, match="warm_start.trl.seed: .* use seed instead"):
        warm_start_args(WarmStartConfig(trl={"seed": 1}), tmp_path, seed=0)
