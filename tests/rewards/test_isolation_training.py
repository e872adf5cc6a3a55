"""Per-sample isolation end to end: a reward that raises on 1 of 64 samples trains to the end, the sample
gets no reward (no loss, out of its group's statistics) and its failure is counted at every step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

FLAKY = '''
_victims = []


def flaky(prompts, completions, **kwargs):
    """Full marks for any answer, except that it raises on the sixth completion of every batch it sees."""
    if len(completions) > 1:
        _victims.append(completions[5])
    if any(c is v for c in completions for v in _victims):
        raise ValueError("cannot parse this answer")
    return [1.0 if len(str(c)) % 2 else 0.0 for c in completions]
'''


def test_a_reward_raising_on_one_of_64_samples_trains_to_the_end(tmp_path):
    (tmp_path / "flaky_rewards.py").write_text(FLAKY)
    recipe = {
        "policy": {"preset": "k2-tiny"}, "seed": 0, "output_dir": str(tmp_path / "runs"),
        "data": {"source": "arithmetic", "train_size": 64, "eval_size": 8},
        "warm_start": {"enabled": False},
        "trainer": {"max_steps": 3, "per_device_train_batch_size": 64, "num_generations": 8,
                    "max_completion_length": 6, "logging_steps": 1, "eval_steps": 0},
        "rewards": [{"name": "./flaky_rewards.py:flaky"}, {"name": "format", "weight": 0.5}],
        "reward_failures": {"min_samples": 1},  # one failure in 64 must stay far below the bound at once
        "eval": {"batch_size": 8, "max_new_tokens": 6, "rewards": ["format"]},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "k2rl.cli", "train", "tiny.yaml"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reward 'flaky' failed on 1 of 64 samples: raised ValueError: cannot parse this answer" in result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    records = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
               if r["phase"] == "rl" and "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:  # counted per step, as a count: exactly the one sample
        assert record["rewards/flaky/failures"] == 1
        assert record["rewards/format/failures"] == 0
        assert record["rewards/unscored"] == 1
    assert json.loads((run_dir / "summary.json").read_text())["rl_steps"] == 3
