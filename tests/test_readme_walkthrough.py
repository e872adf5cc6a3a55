"""The README's reward-author walk-through and its Python API example, run as written: an import-path
reward, `rewards check`, `rewards audit`, a short training, `k2rl rollouts`, `k2rl eval`, and the same
from Python with a function and a Dataset."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _block(name: str, language: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"<!-- {name}:start -->", 1)[1].split(f"<!-- {name}:end -->", 1)[0]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def _env() -> dict:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PATH": bin_dir + os.pathsep + os.environ["PATH"]}


def test_reward_author_walkthrough_runs_as_written(tmp_path):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", _block("walkthrough", "bash")], cwd=tmp_path,
                            env=_env(), capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"line 1 +1\.0000", out) and re.search(r"line 2 +0\.0000", out)  # check, per sample
    assert "reward './my_rewards.py:regex_answer': 12 hacks, 0 earn reward" in out      # the audit
    run = tmp_path / "runs" / "mine"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in records if r["phase"] == "rl" and "loss" in r]
    assert rl and all(r["rewards/regex_answer/failures"] == 0 for r in rl)
    rollouts = [json.loads(line) for line in (run / "rollouts.jsonl").read_text().splitlines()]
    assert len(rollouts) == 4 and all(set(r["rewards"]) == {"regex_answer"} for r in rollouts)
    assert "rewards:    regex_answer=" in out
    report = json.loads((run / "eval-warm_start+adapter.json").read_text())
    assert report["metric"] == "regex_answer" and "pass@2" in report["rewards"]["regex_answer"]
    assert report["accuracy"] == json.loads((run / "summary.json").read_text())["accuracy_after"]


def test_python_api_example_runs_as_written(tmp_path):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "example.py").write_text(_block("python-api", "python"))
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=_env(), capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    before, after, evaluated = map(float, result.stdout.strip().splitlines()[-1].split())
    assert evaluated == after
    run = tmp_path / "runs" / "api"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metric"] == "exact" and summary["rl_steps"] == 2
    assert json.loads((run / "eval-warm_start+adapter.json").read_text())["rows"] == 16
    config = (run / "config.yaml").read_text()
    assert "name: exact" in config
