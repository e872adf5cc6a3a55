"""The feature matrix: every row of k2rl.compat's pairwise cover runs two real RL steps on a tiny policy,
with its invariants checked; every refused pair fails at config time in one line naming both features.

Invariants (in-process rows read them from the trainer; two-process rows from the run directory):
- the probe reward (``prompt_probe``, its tenths encode the prompt) reaches the row it was computed for;
- every metric a reward emits through ``log_metric`` is in ``metrics.jsonl``;
- advantages (and PPO's returns) are non-zero only on tokens the policy sampled in this iteration;
- the prompt sampler's success rates follow the prompts they were measured on;
- a resumed run draws the same prompts as the uninterrupted one.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import k2rl.recipe
from k2rl import compat
from k2rl.cli import main
from k2rl.config import load_config
from k2rl.data.sources import load_task_data
from k2rl.run.preflight import check_before_building
from k2rl.errors import K2RLError
from k2rl.rewards.probe import prompt_code
from k2rl.trainer.base import K2GRPOTrainer
from k2rl.trainer.checkpointing import read_data_order
from k2rl.trainer.losses import loss_mask

ROWS = compat.cover()
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train(row, recipe_path: Path, out: Path, resume: bool = False) -> None:
    args = ["train", str(recipe_path), f"output_dir={out}", "run_name=row", *(["--resume"] if resume else [])]
    if row["processes"] == "1":
        assert main(args) == 0
        return
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [str(accelerate), "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "cpu_gloo.yaml"),
               "--main_process_port", str(_free_port()), "-m", "k2rl.cli", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**_env(), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]


def _env():
    import os

    return dict(os.environ)


class Watch:
    """What the trainer of an in-process run saw: the scored rows, the loss inputs, the trainer itself."""

    def __init__(self, monkeypatch):
        self.scored, self.losses, self.trainers = [], [], []
        after_rewards, policy_loss, build = K2GRPOTrainer.after_rewards, K2GRPOTrainer.policy_loss, k2rl.recipe.build_trainer

        def watched_after_rewards(trainer, rewards_per_func, rows):
            if trainer.model.training:
                column = list(trainer.reward_func_names).index("prompt_probe")
                self.scored.append(([row["prompt"] for row in rows], rewards_per_func[:, column].tolist()))
            return after_rewards(trainer, rewards_per_func, rows)

        def watched_policy_loss(trainer, model, inputs):
            self.losses.append({k: v.detach().clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)})
            return policy_loss(trainer, model, inputs)

        def watched_build(*args, **kwargs):
            self.trainers.append(build(*args, **kwargs))
            return self.trainers[-1]

        # Subclasses call these through super(), so the base methods are wrapped in place.
        monkeypatch.setattr(K2GRPOTrainer, "after_rewards", watched_after_rewards)
        monkeypatch.setattr(K2GRPOTrainer, "policy_loss", watched_policy_loss)
        monkeypatch.setattr(k2rl.recipe, "build_trainer", watched_build)


def _check_probe_rows(watch: Watch) -> None:
    checked = 0
    for prompts, values in watch.scored:
        for prompt, value in zip(prompts, values, strict=True):
            if not math.isnan(value):
                assert abs(value - prompt_code(prompt)) < 0.025, (prompt, value)
                checked += 1
    assert checked, "no probe reward was scored"


def _check_loss_masks(watch: Watch) -> None:
    assert watch.losses
    for inputs in watch.losses:
        mask = loss_mask(inputs).bool()
        for key in ("advantages", "returns"):
            value = inputs.get(key)
            if value is None:
                continue
            if value.dim() == 2:  # per token (PPO): nothing off the sampled tokens
                assert value[~mask].abs().sum() == 0, key
            else:  # per sequence: a row with no sampled token (paused, or all environment) has none
                assert value[~mask.any(dim=1)].abs().sum() == 0, key


def _check_sampler(trainer) -> None:
    sampler = trainer.prompts
    if sampler is None:
        return
    rates = dict(sampler.success)
    for update in sampler.pending:
        rates.update({i: r for i, r in update})
    assert rates, "the sampler observed nothing"
    for index, rate in rates.items():  # success = probe >= 0.5, i.e. the prompt's code is 0.5 or more
        assert rate == float(prompt_code(trainer.train_dataset[index]["prompt"]) >= 0.5), index


def _check_metrics(run_dir: Path, row) -> None:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rl = [r for r in records if r["phase"] == "rl" and "loss" in r]
    assert len(rl) == 2, "two logged RL steps"
    emitted = ["probe/rows", "rewards/prompt_probe/failures"]
    if row["k15_length"] == "on":
        emitted.append("rewards/k1.5_length/failures")
    if row["critic"] == "on":
        emitted += ["rewards/rubric/failures", "rubric/judgements"]
    # With partial rollouts a step may finish no group at all: no reward runs, so none reports.
    steps = rl if row["rollout"] != "partial" else [{k: v for r in rl for k, v in r.items()}]
    for record in steps:
        missing = [name for name in emitted if name not in record]
        assert not missing, f"step {record['step']}: {missing} not in metrics.jsonl"


@pytest.mark.parametrize("index", range(len(ROWS)), ids=[f"row{i}" for i in range(len(ROWS))])
def test_row_runs_two_steps_with_its_invariants(index, tmp_path, monkeypatch):
    row = ROWS[index]
    if reason := compat.skip_reason(row):
        pytest.skip(reason)
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(compat.recipe(row)))
    watch = Watch(monkeypatch) if row["processes"] == "1" else None
    _train(row, recipe_path, tmp_path / "runs")
    run_dir = tmp_path / "runs" / "row"
    _check_metrics(run_dir, row)
    if watch is not None:
        _check_probe_rows(watch)
        _check_loss_masks(watch)
        _check_sampler(watch.trainers[-1])
    if row["resume"] == "on":
        drawn = {r["step"]: r["prompts"] for r in read_data_order(run_dir) if r["process"] == 0}
        shutil.rmtree(run_dir / "rl_tmp" / "checkpoint-2")
        (run_dir / "rl_tmp" / "data_order.jsonl").unlink()
        (run_dir / "summary.json").unlink()  # as a killed run leaves it: a finished run is not resumed
        _train(row, recipe_path, tmp_path / "runs", resume=True)
        again = {r["step"]: r["prompts"] for r in read_data_order(run_dir) if r["process"] == 0}
        assert again == {2: drawn[2]}


@pytest.mark.parametrize("pair", sorted(compat.REFUSED), ids=lambda p: f"{p[0]}={p[1]}+{p[2]}={p[3]}")
def test_refused_pair_is_one_line_naming_both_features_before_any_model(pair, tmp_path):
    a, x, b, y = pair
    row = {f: values[0] for f, values in compat.FEATURES.items()} | {a: x, b: y}
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(compat.recipe(row)))
    config = load_config(str(recipe_path), [f"output_dir={tmp_path}"])
    with pytest.raises(K2RLError) as info:
        if row["processes"] == "1":
            k2rl.recipe.train(config)
        else:  # the number of processes comes from the launcher; preflight is what refuses it
            check_before_building(config, load_task_data(config.data, config.seed), num_processes=2)
    message = str(info.value)
    assert "\n" not in message and f"{a}={x}" in message and f"{b}={y}" in message
    assert not (tmp_path / "runs").exists() and not list(tmp_path.glob("*/initial_policy"))


def test_every_allowed_pair_has_a_row_and_the_table_says_so():
    lines = compat.table()
    assert len(lines) == len(compat._pairs())
    for pair in compat._pairs():
        a, x, b, y = pair
        # a row that may be skipped (vLLM) covers only pairs it cannot run without
        rows = ROWS if compat._involves_optional(pair) else [r for r in ROWS if not compat._has_optional(r)]
        covered = any(r[a] == x and r[b] == y for r in rows)
        assert covered != bool(compat.refusal(a, x, b, y)), pair
    assert all(compat.allowed(r) for r in ROWS)


def test_the_readme_keeps_the_current_table():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- compat:begin")
    block = readme[readme.index("\n", start) + 1 : readme.index("<!-- compat:end -->")].rstrip()
    assert block == compat.markdown(), "README's table is stale: paste `python -m k2rl.compat` between the markers"
    for (a, x, b, y) in compat.REFUSED:
        assert f"`{a}={x}` with `{b}={y}`" in readme
