"""`k2rl rollouts RECIPE -n N`: sampled completions of the recipe's policy with every reward's score
(a failed score with its reason), printed and saved as JSONL, never over an earlier file."""

from __future__ import annotations

import json
from pathlib import Path

from k2rl.cli import main

ROOT = Path(__file__).resolve().parents[1]
REWARDS = '''
_victims = []


def picky(prompts, completions, answer, **kwargs):
    """Raises on the second completion of each batch; otherwise scores by length parity."""
    if len(completions) > 1:
        _victims.append(completions[1])
    if any(c is v for c in completions for v in _victims):
        raise ValueError("cannot read this one")
    return [float(len(c[-1]["content"]) % 2) for c in completions]
'''


def test_rollouts_prints_and_saves_every_rewards_score(tmp_path, monkeypatch, capsys):
    (tmp_path / "mine.py").write_text(REWARDS)
    monkeypatch.chdir(tmp_path)
    args = ["rollouts", str(ROOT / "configs" / "quickstart.yaml"), "-n", "2", "--per-prompt", "2",
            "rewards=[{name: exact_answer}, {name: ./mine.py:picky}]", "trainer.max_completion_length=8",
            "data.train_size=32", "data.eval_size=8"]
    assert main(args) == 0
    out = capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "rollouts.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(set(r["rewards"]) == {"exact_answer", "picky"} for r in records)
    assert all(r["completion"][0]["role"] == "assistant" and "answer" in r for r in records)
    assert records[1]["rewards"]["picky"] is None
    assert records[1]["failures"] == {"picky": "raised ValueError: cannot read this one"}
    assert out.count("--- rollout ") == 4 and "picky=FAILED (raised ValueError: cannot read this one)" in out
    assert main(args) == 0  # a second look never writes over the first
    assert (tmp_path / "rollouts-2.jsonl").exists()
