"""End to end: rewards from a plugin package, composed with built-ins, in a few `k2rl train` steps.

Uses the plugin fixture package (pip-installed once per module, see ``conftest.py``) and a tiny recipe: a random k2-tiny policy, no warm start, two RL steps on CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml


def run_train(tmp_path, site, rewards, max_steps=2):
    recipe = {
        "policy": {"preset": "k2-tiny"},
        "seed": 0,
        "output_dir": str(tmp_path / "runs"),
        "data": {"source": "arithmetic", "train_size": 64, "eval_size": 8},
        "warm_start": {"enabled": False},
        "trainer": {"max_steps": max_steps, "per_device_train_batch_size": 8, "num_generations": 4,
                    "max_completion_length": 8, "logging_steps": 1, "eval_steps": 0},
        "rewards": rewards,
        "eval": {"batch_size": 8, "max_new_tokens": 8},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "k2rl.cli", "train", str(tmp_path / "tiny.yaml")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )


def rl_records(tmp_path):
    (metrics,) = (tmp_path / "runs").glob("*/metrics.jsonl")
    return [r for r in map(json.loads, metrics.read_text().splitlines()) if r["phase"] == "rl" and "loss" in r]


def test_plugin_reward_trains_alongside_builtins(installed_plugin, tmp_path):
    result = run_train(tmp_path, installed_plugin, [
        {"name": "exact_answer", "weight": 1.0},
        {"name": "math", "weight": 1.0, "options": {"check_timeout_s": 10}},
        {"name": "demo_brevity", "weight": 0.5, "options": {"max_chars": 8}, "timeout_s": 30},
    ])
    assert result.returncode == 0, result.stderr[-2000:]
    records = rl_records(tmp_path)
    assert len(records) == 2
    for record in records:
        for name in ("exact_answer", "math", "demo_brevity"):
            assert f"rewards/{name}/mean" in record and f"rewards/{name}/std" in record
            assert record[f"rewards/{name}/failures"] == 0
        assert record["rewards/demo_brevity/mean"] >= 0


def test_a_reward_that_keeps_failing_stops_the_run_by_name(installed_plugin, tmp_path):
    result = run_train(tmp_path, installed_plugin, [
        {"name": "exact_answer"},
        {"name": "demo_broken", "weight": 0.5},
    ], max_steps=6)
    assert result.returncode == 2
    (message,) = [line for line in result.stderr.splitlines() if line.startswith("k2rl: error:")]
    assert message.startswith("k2rl: error: reward 'demo_broken' failed on 32 of 32 samples")
    assert "RuntimeError: demo verifier is down" in message
    assert "Traceback" not in result.stderr
    assert "reward 'demo_broken' failed on 8 of 8 samples" in result.stderr  # the contained first batch
