"""Checkpoint and resume: SIGKILL a training run mid-RL, resume it, lose no completed step, keep the data order."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from k2rl.trainer.checkpointing import forget_after, last_checkpoint, read_data_order, resume_run_dir
from k2rl.config import load_config
from k2rl.errors import K2RLError

MAX_STEPS = 6
RECIPE = [
    "data.train_size=256",  # more prompts than the run uses: within one epoch no prompt comes back
    "data.options.max_operand=99",  # and enough distinct problems that no two rows are the same prompt
    "data.eval_size=8",
    "warm_start.max_steps=2",
    f"trainer.max_steps={MAX_STEPS}",
    "trainer.per_device_train_batch_size=8",
    "trainer.num_generations=4",
    "trainer.max_completion_length=6",
    "trainer.eval_steps=0",
    "trainer.logging_steps=1",
    "trainer.save_steps=1",
    "eval.max_new_tokens=6",
]


def _k2rl(*args):
    return [sys.executable, "-m", "k2rl.cli", *args]


def _rl_steps_logged(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["step"] for r in records if r["phase"] == "rl" and "reward" in r]


def _kill_mid_run_and_resume(tmp_path, request, extra=()):
    """Train, SIGKILL once a few RL steps are checkpointed, resume; (run dir, saved step, data order
    before the kill, data order after the resume, the resumed process)."""
    recipe = str(request.config.rootpath / "configs" / "quickstart.yaml")
    args = [recipe, f"output_dir={tmp_path}", "run_name=killed", *RECIPE, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run_dir = tmp_path / "killed"
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(_k2rl("train", *args), env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    try:  # kill once RL has completed (and checkpointed) a few steps, somewhere mid-run
        while time.time() < deadline and proc.poll() is None:
            # wait for the checkpoint itself: the trainer logs a step before it saves it
            saved = last_checkpoint(run_dir) if run_dir.exists() else None
            if saved is not None and int(saved.name.split("-")[1]) >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    checkpoint = last_checkpoint(run_dir)
    assert checkpoint is not None
    saved_step = int(checkpoint.name.split("-")[1])
    assert 3 <= saved_step < MAX_STEPS
    before_kill = read_data_order(run_dir)

    resumed = subprocess.run(_k2rl("train", *args, "--resume"), env=env, capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"resuming from {checkpoint}" in resumed.stdout
    return run_dir, saved_step, before_kill, read_data_order(run_dir)[len(before_kill):], resumed


def test_sigkill_then_resume_continues_where_the_checkpoint_left_off(tmp_path, request):
    run_dir, saved_step, before_kill, after_resume, _ = _kill_mid_run_and_resume(tmp_path, request)

    # No completed step is lost: the resumed process starts at the step after the checkpoint...
    assert [r["step"] for r in after_resume] == list(range(saved_step + 1, MAX_STEPS + 1))
    # ...and every step 1..MAX_STEPS is logged exactly once (records after the checkpoint were forgotten).
    assert _rl_steps_logged(run_dir) == list(range(1, MAX_STEPS + 1))
    # The data order continues: a step re-run after the kill trains on the same prompts as before it,
    # and no step of the whole run repeats a prompt group an earlier step used (the sampler did not restart).
    first_try = {r["step"]: r["prompts"] for r in before_kill}
    for record in after_resume:
        if record["step"] in first_try:
            assert record["prompts"] == first_try[record["step"]]
    by_step = {r["step"]: r["prompts"] for r in before_kill if r["step"] <= saved_step}
    by_step.update({r["step"]: r["prompts"] for r in after_resume})
    groups = [p for step in sorted(by_step) for p in dict.fromkeys(by_step[step])]
    assert len(groups) == len(set(groups)) == MAX_STEPS * 2  # 8 samples = 2 prompts x 4 generations per step
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rl_steps"] == MAX_STEPS and (run_dir / "adapter").is_dir()


def test_sigkill_then_resume_with_the_prioritized_sampler_draws_what_an_uninterrupted_run_draws(tmp_path, request):
    """The prioritized sampler's state comes back from the checkpoint: the steps re-run after a kill -9
    train on the prompts the killed run drew for them, and an uninterrupted run draws the same."""
    prioritized = ["trainer.sampling.method=prioritized"]
    _, saved_step, before_kill, after_resume, _ = _kill_mid_run_and_resume(tmp_path, request, prioritized)
    assert [r["step"] for r in after_resume] == list(range(saved_step + 1, MAX_STEPS + 1))
    first_try = {r["step"]: r["prompts"] for r in before_kill}
    for record in after_resume:
        if record["step"] in first_try:
            assert record["prompts"] == first_try[record["step"]]
    recipe = str(request.config.rootpath / "configs" / "quickstart.yaml")
    whole = subprocess.run(_k2rl("train", recipe, f"output_dir={tmp_path}", "run_name=whole", *RECIPE, *prioritized),
                           env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stdout[-2000:] + whole.stderr[-2000:]
    uninterrupted = {r["step"]: r["prompts"] for r in read_data_order(tmp_path / "whole")}
    resumed_run = {r["step"]: r["prompts"] for r in before_kill if r["step"] <= saved_step}
    resumed_run.update({r["step"]: r["prompts"] for r in after_resume})
    assert resumed_run == uninterrupted


def test_resume_rejects_a_different_recipe(tmp_path, request):
    recipe = request.config.rootpath / "configs" / "quickstart.yaml"
    config = load_config(recipe, [f"output_dir={tmp_path}", "run_name=r"])
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    from k2rl.config import config_to_dict

    (run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config)))
    assert resume_run_dir(config, True) == run_dir
    changed = load_config(recipe, [f"output_dir={tmp_path}", "run_name=r", "trainer.learning_rate=1.0"])
    with pytest.raises(K2RLError, match="trainer.learning_rate"):
        resume_run_dir(changed, True)
    with pytest.raises(K2RLError, match="run_name"):
        resume_run_dir(load_config(recipe, [f"output_dir={tmp_path}"]), True)


def test_incomplete_checkpoints_are_ignored_and_later_metrics_forgotten(tmp_path):
    root = tmp_path / "rl_tmp"
    for step, complete in ((2, True), (4, True), (6, False)):
        (root / f"checkpoint-{step}").mkdir(parents=True)
        if complete:
            (root / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == root / "checkpoint-4"
    metrics = tmp_path / "metrics.jsonl"
    records = [{"phase": "warm_start", "step": 9}, {"phase": "eval", "step": 0}, {"phase": "rl", "step": 4}, {"phase": "rl", "step": 5}]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    forget_after(metrics, 4)
    assert [json.loads(line) for line in metrics.read_text().splitlines()] == records[:3]
