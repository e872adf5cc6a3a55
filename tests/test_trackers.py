"""`report_to: [tensorboard]`: the warm start and RL write TensorBoard event files, read back here with
TensorBoard's own reader: the reward curve, the training loss and the held-out accuracy as scalars."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from k2rl.cli import main  # noqa: E402
from test_train_smoke import FAST  # noqa: E402


def _scalars(phase_dir):
    (events,) = {path.parent for path in phase_dir.glob("runs/*/events.out.tfevents.*")}
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, request):
    out = tmp_path_factory.mktemp("runs")
    recipe = request.config.rootpath / "configs" / "quickstart.yaml"
    assert main(["train", str(recipe), f"output_dir={out}", "run_name=tb", "report_to=[tensorboard]", *FAST]) == 0
    return out / "tb"


def test_rl_reward_curve_and_heldout_accuracy_are_tensorboard_scalars(run_dir):
    import json

    scalars = _scalars(run_dir / "rl_tmp")
    assert [step for step, _ in scalars["train/reward"]] == [1, 2, 3]  # trainer.logging_steps=1, 3 steps
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r["accuracy"] for r in logged if r["phase"] == "eval"}
    assert evals.keys() == {0, 2, 3}  # before RL, trainer.eval_steps=2, and the final evaluation after the last step
    assert [(step, pytest.approx(value)) for step, value in scalars["train/heldout/accuracy"]] == sorted(evals.items())
    rewards = {r["step"]: r["reward"] for r in logged if r["phase"] == "rl" and "reward" in r}
    assert [(s, pytest.approx(v)) for s, v in scalars["train/reward"]] == sorted(rewards.items())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["accuracy_after"] == evals[3]


def test_warm_start_loss_is_a_tensorboard_scalar(run_dir):
    scalars = _scalars(run_dir / "warm_start_tmp")
    assert scalars["train/loss"] and all(value > 0 for _, value in scalars["train/loss"])


def test_the_heldout_evaluation_before_rl_reaches_the_tracker_at_step_0(run_dir):
    import json

    scalars = _scalars(run_dir / "rl_tmp")
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    (before,) = [r for r in logged if r["phase"] == "eval" and r["step"] == 0]
    assert scalars["train/heldout/accuracy"][0] == (0, pytest.approx(before["accuracy"]))
    assert scalars["train/heldout/exact_answer/mean"][0][0] == 0
    assert not [r for r in logged if r["phase"] == "rl" and r["step"] == 0]  # metrics.jsonl has it as "eval"


def test_failure_counts_and_lengths_reach_the_tracker(run_dir):
    scalars = _scalars(run_dir / "rl_tmp")
    assert [v for _, v in scalars["train/rewards/exact_answer/failures"]] == [0, 0, 0]
    assert [v for _, v in scalars["train/rewards/unscored"]] == [0, 0, 0]
    assert len(scalars["train/completions/mean_length"]) == 3


def test_progress_png_has_a_panel_per_reward_accuracy_failures_and_length(run_dir):
    import json

    from k2rl.run.outputs import progress_panels

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    panels = dict(progress_panels(records))
    assert [s for s, _ in panels["reward: exact_answer"]["exact_answer"]] == [1, 2, 3]
    assert [s for s, _ in panels["held-out accuracy (greedy)"]["accuracy"]] == [0, 2, 3]
    assert set(panels["failed / unscored samples per logged step"]) == {"exact_answer/failures", "unscored"}
    assert panels["completion length (tokens)"]["mean length"]
    assert (run_dir / "progress.png").stat().st_size > 10_000


OFFLINE = {  # tracker -> (environment for its offline mode, what it writes under the working directory)
    "wandb": ({"WANDB_MODE": "offline"}, "wandb"),
    "mlflow": ({"MLFLOW_TRACKING_URI": "file:./mlruns"}, "mlruns"),
    "trackio": ({"TRACKIO_DIR": "./trackio"}, "trackio"),
}


@pytest.mark.parametrize("tracker", sorted(OFFLINE))
def test_each_tracker_runs_offline_where_installed(tracker, tmp_path, request, monkeypatch):
    import importlib.util

    if importlib.util.find_spec(tracker) is None:
        pytest.skip(f"{tracker} is not installed (preflight refuses it in one line: tests/test_fail_fast.py)")
    env, written = OFFLINE[tracker]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    recipe = request.config.rootpath / "configs" / "quickstart.yaml"
    assert main(["train", str(recipe), f"output_dir={tmp_path / 'runs'}", "run_name=t", f"report_to=[{tracker}]",
                 *FAST]) == 0
    assert (tmp_path / written).exists()
