"""``k2rl train ... rollout.backend=vllm`` end to end, a few steps: the engine starts from the recipe, is
checked before training and every step, receives a push after every optimizer step, TRL's importance-sampling
correction runs on its log-probabilities, and the engine process is gone when the run ends -- synchronous and
one step ahead (``rollout.max_staleness: 1``).

Skipped, with the reason, where the vLLM environment is not built (scripts/setup.sh builds it).
"""

from __future__ import annotations

import json

import pytest

from k2rl.cli import main
from vllm_support import needs_vllm

pytestmark = needs_vllm
FAST = [
    "data.train_size=64", "data.eval_size=16", "warm_start.max_steps=3", "trainer.max_steps=3",
    "trainer.per_device_train_batch_size=8", "trainer.num_generations=4", "trainer.max_completion_length=8",
    "trainer.eval_steps=0", "trainer.logging_steps=1", "eval.max_new_tokens=8", "rollout.backend=vllm",
    "rollout.vllm_check_every=1", "rollout.vllm_check_prompts=4",
    # rewards that differ within every group from the first step, so every step changes the adapters
    "rewards=[{name: length_penalty, options: {budget: 8, window: 24, unit: chars}}]",
]


@pytest.fixture(scope="module", params=[0, 1], ids=["synchronous", "one_step_ahead"])
def vllm_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    recipe = request.config.rootpath / "configs" / "quickstart.yaml"
    name = f"staleness{request.param}"
    assert main(["train", str(recipe), f"output_dir={out}", f"run_name={name}", *FAST,
                 f"rollout.max_staleness={request.param}"]) == 0
    return out / name, request.param


def all_rl(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("phase") == "rl"]


def rl_records(run_dir):
    return [r for r in all_rl(run_dir) if "loss" in r]


def test_summary_records_the_largest_log_prob_gap(vllm_run):
    run_dir, _ = vllm_run
    vllm = json.loads((run_dir / "summary.json").read_text())["vllm"]
    assert vllm["logprob_max_abs_diff"] is not None and vllm["logprob_max_abs_diff"] <= 1e-3
    assert vllm["logprob_checks"] >= 3  # before training, then after pushes
    assert vllm["engine"]["dtype"] == "torch.float32" and vllm["engine"]["mla_disabled"]  # k2-tiny's MLA width
    config = json.loads((run_dir / "vllm" / "checkpoint" / "config.json").read_text())
    assert config["topk_method"] == "noaux_tc" and config["scoring_func"] == "sigmoid"


def test_every_step_pushes_checks_and_corrects(vllm_run):
    run_dir, staleness = vllm_run
    records = rl_records(run_dir)
    assert len(records) == 3
    # pushed and checked before training (logged with the step-0 evaluation's record), then checked at
    # every step after a push: step 1 runs at the warm-up's zero learning rate, so nothing changes and
    # nothing moves; step 2's update is pushed before step 3
    before = [r for r in all_rl(run_dir) if r.get("step") == 0 and "vllm/push_s" in r]
    assert len(before) == 1 and before[0]["vllm/logprob_max_abs_diff"] <= 1e-3
    gaps = [r["vllm/logprob_max_abs_diff"] for r in all_rl(run_dir) if "vllm/logprob_max_abs_diff" in r]
    assert len(gaps) >= 3 and max(gaps) <= 1e-3
    assert "vllm/push_s" not in records[0] and "vllm/push_s" not in records[1] and records[2]["vllm/push_s"] > 0
    assert all("sampling/importance_sampling_ratio/mean" in r for r in records)  # TRL's correction ran
    assert all(("rollouts/staleness" in r) == bool(staleness) for r in records)


def test_the_engine_process_stops_with_the_run(vllm_run):
    from pathlib import Path

    run_dir, _ = vllm_run
    pid = json.loads((run_dir / "summary.json").read_text())["vllm"]["engine"]["pid"]
    cmdline = Path(f"/proc/{pid}/cmdline")
    assert not cmdline.exists() or b"vllm_worker" not in cmdline.read_bytes()
