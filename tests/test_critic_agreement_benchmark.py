"""benchmarks/critic_agreement.py on a run whose samples give no labelled pair: a message, not a TypeError."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from k2rl.config import config_to_dict, load_config
from k2rl.policy.build import init_policy

ROOT = Path(__file__).resolve().parents[1]


def test_no_labelled_pair_is_reported_not_a_type_error(tmp_path):
    run = tmp_path / "run"
    config = load_config(ROOT / "configs" / "quickstart.yaml", ["trainer.max_completion_length=4"])
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    init_policy("k2-tiny", run / "warm_start", seed=0)  # random weights: every sample fails, no pair is labelled
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "critic_agreement.py"), str(run),
                             "--prompts", "2", "--samples", "2"], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "TypeError" not in result.stderr
    assert result.returncode == 1 and "no pair could be labelled" in result.stdout
