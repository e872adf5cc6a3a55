"""benchmarks/optimizers.py --reuse: finished rows are read back from --out, not trained again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _finished_row(run_dir: Path, curve: list[tuple[int, float]], wall: float) -> None:
    run_dir.mkdir(parents=True)
    lines = [{"phase": "rl", "step": 10, "loss": 0.1}] + [{"phase": "eval", "step": s, "accuracy": a} for s, a in reversed(curve)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run_dir / "summary.json").write_text(json.dumps({"accuracy_before": curve[0][1], "accuracy_after": curve[-1][1], "wall_s": wall}))


def test_reuse_reads_finished_rows_and_trains_none(tmp_path):
    _finished_row(tmp_path / "adamw-lr0.002-s0", [(0, 0.25), (10, 0.5), (20, 0.92)], 300.0)
    _finished_row(tmp_path / "muon-lr0.004-s0", [(0, 0.25), (10, 0.91), (20, 0.46)], 200.0)
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "optimizers.py"), "--seeds", "0", "--adamw", "2e-3",
                             "--muon", "4e-3", "--muonclip", "--warm-start", str(tmp_path / "absent"), "--out", str(tmp_path),
                             "--reuse", "--max-steps", "20"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert not list(tmp_path.glob("*.log"))  # no run was started
    rows = {}  # the per-run table comes first; the means table repeats the names after it
    for line in result.stdout.splitlines():
        if line.split()[:1] in (["adamw"], ["muon"]):
            rows.setdefault(line.split()[0], line.split())
    assert rows["adamw"][3:6] == ["0.250", "0.500", "0.920"] and rows["adamw"][6] == "20"  # curve in step order, first step >= 0.9
    assert rows["muon"][6] == "10"
    saved = json.loads((tmp_path / "optimizers.json").read_text())
    assert saved["muon-lr0.004-s0"]["final"] == 0.46 and saved["adamw-lr0.002-s0"]["wall"] == 300.0
