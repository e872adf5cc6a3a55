"""Checkpoints and resume: a killed run continues from its last complete checkpoint.

The saving itself is the HF Trainer's (``save_steps``): adapter, optimizer, scheduler, RNG states and
``trainer_state.json`` (the global step, from which the Trainer skips the batches already seen, so the
data order continues). What k2rl adds is what the Trainer cannot know:
- which run directory to continue (``k2rl train RECIPE --resume [RUN_DIR]``), and that the recipe
  given now is the recipe that run was started with;
- which checkpoint is complete: a ``kill -9`` can land in the middle of writing one, and
  ``trainer_state.json`` is written after the weights and optimizer, so a directory without it is
  ignored;
- forgetting metrics logged after that checkpoint, since those steps are run again;
- a per-step record of which prompts each RL step trained on (``data_order.jsonl``), so a resumed
  run can be checked against an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import yaml

from k2rl.config import RunConfig, config_to_dict
from k2rl.errors import K2RLError
from k2rl.layout import RunLayout

CHECKPOINTS = RunLayout(Path()).checkpoints.name  # the RL trainer's output_dir inside a run directory
DATA_ORDER = RunLayout(Path()).data_order.name
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def last_checkpoint(run_dir: Path) -> Path | None:
    """The highest-step complete checkpoint in ``run_dir`` (None if there is none)."""
    root = RunLayout(run_dir).checkpoints
    if not root.is_dir():
        return None
    complete = [
        (int(m.group(1)), path)
        for path in root.iterdir()
        if (m := _CHECKPOINT.match(path.name)) and (path / "trainer_state.json").is_file()
    ]
    return max(complete)[1] if complete else None


def checkpoint_step(checkpoint: Path | None) -> int:
    return int(_CHECKPOINT.match(checkpoint.name).group(1)) if checkpoint else 0


def resume_run_dir(config: RunConfig, resume: str | bool) -> Path:
    """The run directory to continue: ``resume`` itself, or ``output_dir/run_name`` for a bare ``--resume``."""
    if resume is True:
        if not config.run_name:
            raise K2RLError("--resume without a run directory needs run_name=NAME (the run to continue)")
        run_dir = Path(config.output_dir) / config.run_name
    else:
        run_dir = Path(resume)
    saved = RunLayout(run_dir).config
    if not saved.is_file():
        raise K2RLError(f"--resume: {run_dir} is not a k2rl run directory (no config.yaml)")
    before = yaml.safe_load(saved.read_text())
    now = yaml.safe_load(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    for key in _differing_keys(before, now):
        if key not in ("output_dir", "run_name"):  # where the run lives may be spelled differently
            raise K2RLError(f"--resume: recipe key '{key}' differs from the run's config.yaml; resume with the same recipe")
    return run_dir


def _differing_keys(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [k for key in keys for k in _differing_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]


def forget_after(metrics_path: Path, step: int, phases=("rl", "eval")) -> None:
    """Drop ``phases`` records logged after ``step``: the resumed run logs those steps again."""
    if not metrics_path.exists():
        return
    kept = []
    for line in metrics_path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if not (record.get("phase") in phases and record.get("step", 0) > step):
            kept.append(line)
    metrics_path.write_text("".join(k + "\n" for k in kept))


def record_batch(out_dir: str | Path, step: int, process: int, inputs: list[dict]) -> None:
    """Append which prompts RL step ``step`` trains on (short digests, in batch order)."""
    digests = [hashlib.sha1(repr(example.get("prompt")).encode()).hexdigest()[:10] for example in inputs]
    with (Path(out_dir) / DATA_ORDER).open("a") as handle:
        handle.write(json.dumps({"step": step, "process": process, "prompts": digests}) + "\n")


def read_data_order(run_dir: Path) -> list[dict]:
    path = RunLayout(run_dir).data_order
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
