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
    evals = {r["step"]: r["accuracy"] for r in logged if r["phase"] == "eval" and r["step"] > 0}
    assert evals.keys() == {2, 3}  # trainer.eval_steps=2, and the final evaluation after the last step
    assert [(step, pytest.approx(value)) for step, value in scalars["train/heldout/accuracy"]] == sorted(evals.items())
    rewards = {r["step"]: r["reward"] for r in logged if r["phase"] == "rl" and "reward" in r}
    assert [(s, pytest.approx(v)) for s, v in scalars["train/reward"]] == sorted(rewards.items())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["accuracy_after"] == evals[3]


def test_warm_start_loss_is_a_tensorboard_scalar(run_dir):
    scalars = _scalars(run_dir / "warm_start_tmp")
    assert scalars["train/loss"] and all(value > 0 for _, value in scalars["train/loss"])
