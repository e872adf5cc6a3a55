"""`report_to: [tensorboard, wandb, mlflow, trackio]`: the warm start and RL write each tracker's own files,
read back here (TensorBoard's event reader, W&B's offline run file, MLflow's local file store, trackio's
local SQLite store): the reward curve, the held-out accuracy from step 0 and the failure counts, each the
series metrics.jsonl holds.

W&B runs offline (WANDB_MODE=offline), MLflow on a local file store and trackio without a Space
(TRACKIO_DIR); k2rl[trackers] installs all three. Where one is missing, preflight refuses it in
``report_to`` in one line (tests/test_fail_fast.py)."""

from __future__ import annotations

import importlib.util
import json

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


def _offline(tracker: str, where) -> dict[str, str]:
    """The environment that keeps ``tracker`` on this machine, writing under ``where``."""
    return {
        "wandb": {"WANDB_MODE": "offline", "WANDB_DIR": str(where), "WANDB_SILENT": "true"},
        "mlflow": {"MLFLOW_TRACKING_URI": f"file:{where / 'mlruns'}", "MLFLOW_ALLOW_FILE_STORE": "true"},
        "trackio": {"TRACKIO_DIR": str(where / "trackio")},  # no space_id: trackio's local SQLite store
    }[tracker]


OFFLINE = ("wandb", "mlflow", "trackio")
INSTALLED = [tracker for tracker in OFFLINE if importlib.util.find_spec(tracker) is not None]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, request):
    """One short run reporting to TensorBoard and to every offline tracker installed here."""
    out = tmp_path_factory.mktemp("runs")
    recipe = request.config.rootpath / "configs" / "quickstart.yaml"
    with pytest.MonkeyPatch.context() as patch:
        for tracker in INSTALLED:
            for key, value in _offline(tracker, out).items():
                patch.setenv(key, value)
        patch.chdir(out)
        trackers = ",".join(["tensorboard", *INSTALLED])
        assert main(["train", str(recipe), f"output_dir={out}", "run_name=tb", f"report_to=[{trackers}]", *FAST]) == 0
        if "wandb" in INSTALLED:  # what the end of the process does: W&B's writer flushes and closes the run file
            import wandb

            wandb.finish()
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


def _wandb_series(out) -> dict[str, list[tuple[int, float]]]:
    """W&B's offline run file: a LevelDB-style log (32 KiB blocks of checksum, length, kind and payload,
    after a 7-byte ``:W&B`` header) of protobuf Records; each history row carries its trainer step as
    ``train/global_step``."""
    from wandb.proto import wandb_internal_pb2

    (path,) = out.glob("wandb/offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending, series = 7, b"", {}
    while position + 7 <= len(data):
        if (room := 32768 - position % 32768) < 7:  # a block's tail too short for a header is padding
            position += room
            continue
        length, kind = int.from_bytes(data[position + 4:position + 6], "little"), data[position + 6]
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind not in (1, 4):  # a record continues in the next chunk
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        pending = b""
        if record.WhichOneof("record_type") == "history":
            row = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            for key, value in row.items():
                if key.startswith("train/") and isinstance(value, (int, float)):
                    series.setdefault(key.removeprefix("train/"), []).append((row["train/global_step"], value))
    return series


def _mlflow_series(out) -> dict[str, list[tuple[int, float]]]:
    """The RL run in MLflow's file store (the warm start is a run of its own, with no reward)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"file:{out / 'mlruns'}")
    (rl,) = [run for run in client.search_runs(["0"]) if "reward" in run.data.metrics]
    return {key: [(m.step, m.value) for m in client.get_metric_history(rl.info.run_id, key)]
            for key in rl.data.metrics}


def _trackio_series(out) -> dict[str, list[tuple[int, float]]]:
    """The RL run in trackio's local SQLite store (one database per project, one run per phase).
    transformers' trackio callback files every series under ``train/``; the prefix is dropped here."""
    from trackio.sqlite_storage import SQLiteStorage

    for project in SQLiteStorage.get_projects():
        for run in SQLiteStorage.get_runs(project):
            logs = SQLiteStorage.get_logs(project, run)
            if any("train/reward" in entry for entry in logs):
                series: dict[str, list[tuple[int, float]]] = {}
                for entry in logs:
                    for key, value in entry.items():
                        if key.startswith("train/") and isinstance(value, (int, float)):
                            series.setdefault(key.removeprefix("train/"), []).append((entry["step"], value))
                return series
    raise AssertionError(f"no trackio run with a reward under {out / 'trackio'}")


READERS = {"wandb": _wandb_series, "mlflow": _mlflow_series, "trackio": _trackio_series}


@pytest.mark.parametrize("tracker", OFFLINE)
def test_each_offline_tracker_gets_the_series_metrics_jsonl_holds(tracker, run_dir):
    if tracker not in INSTALLED:
        pytest.skip(f"{tracker} is not installed (scripts/setup.sh installs k2rl[trackers])")
    series = READERS[tracker](run_dir.parent)
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = sorted((r["step"], r["accuracy"]) for r in logged if r["phase"] == "eval")
    rewards = sorted((r["step"], r["reward"]) for r in logged if r["phase"] == "rl" and "reward" in r)
    assert [s for s, _ in evals] == [0, 2, 3] and [s for s, _ in rewards] == [1, 2, 3]
    assert sorted(series["heldout/accuracy"]) == [(s, pytest.approx(v)) for s, v in evals]  # step 0 included
    assert sorted(series["reward"]) == [(s, pytest.approx(v)) for s, v in rewards]
    assert sorted(series["rewards/exact_answer/failures"]) == [(1, 0), (2, 0), (3, 0)]
    assert sorted(series["heldout/exact_answer/mean"])[0][0] == 0
