"""The cost of an RL step (``cost/*``): its arithmetic on a fake clock, then real short runs on both
rollout paths (TRL's own generation, k2rl's engine with overlapped scoring). Structural checks only:
which parts are there and how they add up, never how fast anything is."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from k2rl.cli import main
from k2rl.trainer.step_cost import METRICS, PARTS, PREFIX, StepCost, summarise, summary_line

EPS = 1e-6


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_parts_add_up_to_the_step_and_overlap_shows_as_saved_time():
    clock, recorded = FakeClock(), {}
    cost = StepCost(lambda name, value: recorded.__setitem__(name, value), clock=clock)
    with cost.timing("generation"):  # between steps (evaluation): not counted
        clock.now += 100
    cost.on_step_begin(None, None, None)
    with cost.timing("generation"):  # a rollout function that generated for 4 s in all...
        clock.now += 4
        cost.scored_inside_generation(rewards_s=3, waited_s=1)  # ...and scored for 3 s, 2 of them hidden
    with cost.timing("rewards"):
        clock.now += 0.5
    with cost.timing("logprob"):
        clock.now += 1
    clock.now += 2.5  # loss, backward, optimizer
    cost.on_optimizer_step(None, None, None)
    assert recorded == {"cost/generation_s": 3, "cost/rewards_s": 3.5, "cost/rollout_wall_s": 4.5,
                        "cost/logprob_s": 1, "cost/update_s": 2.5, "cost/step_s": 8}

    cost.on_step_begin(None, None, None)  # a step that reuses the buffered generation batch
    clock.now += 2
    cost.on_optimizer_step(None, None, None)
    assert recorded["cost/generation_s"] == recorded["cost/rewards_s"] == 0 and recorded["cost/update_s"] == 2

    summary = cost.summary()
    assert summary["steps"] == 2
    assert summary["seconds"] == {"generation": 1.5, "rewards": 1.75, "rollout_wall": 2.25, "logprob": 0.5,
                                  "update": 2.25, "step": 5}
    assert summary["share"] == {"generation": 0.3, "rewards": 0.15, "logprob": 0.1, "update": 0.45}
    assert summary["overlap_saved_s"] == 1
    line = summary_line(summary)
    assert line.startswith("step cost 5.00s: generation 1.50s (30%) rewards 1.75s (15%)")
    assert line.endswith("overlap saved 1.00s")
    assert StepCost(lambda *_: None).summary() is None and summarise([]) is None


FAST = ["data.train_size=16", "data.eval_size=2", "warm_start.enabled=false", "trainer.max_steps=2",
        "trainer.per_device_train_batch_size=4", "trainer.num_generations=2", "trainer.max_completion_length=8",
        "trainer.logging_steps=1", "trainer.eval_steps=0", "eval.max_new_tokens=4"]
PATHS = {
    # TRL generates; one generation batch serves two steps, so TRL keeps old-policy log-probabilities.
    "trl": ["trainer.trl.steps_per_generation=2"],
    # k2rl's engine as rollout_func, scoring chunk 1 on a worker thread while chunk 2 generates.
    "engine_overlap": ["rollout.overlap=true", "rollout.chunks=2"],
}


@pytest.fixture(scope="module", params=sorted(PATHS))
def cost_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    recipe = request.config.rootpath / "configs" / "quickstart.yaml"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["train", str(recipe), f"output_dir={out}", "run_name=cost", *FAST, *PATHS[request.param]]) == 0
    run = out / "cost"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["phase"] == "rl" and "loss" in r]
    return request.param, steps, json.loads((run / "summary.json").read_text()), printed.getvalue().splitlines()


def test_every_rl_step_logs_its_cost_and_the_parts_add_up(cost_run):
    path, steps, _, _ = cost_run
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        cost = {name: r[PREFIX + name] for name in METRICS}
        assert all(value >= 0 for value in cost.values()), cost
        assert cost["rollout_wall_s"] + cost["logprob_s"] + cost["update_s"] == pytest.approx(cost["step_s"], abs=EPS)
        assert cost["generation_s"] <= cost["rollout_wall_s"] + EPS
        assert cost["generation_s"] + cost["logprob_s"] + cost["update_s"] <= cost["step_s"] * 1.05 + EPS
        if path == "trl":  # nothing overlaps: generation and rewards are the rollout's wall time
            assert cost["generation_s"] + cost["rewards_s"] == pytest.approx(cost["rollout_wall_s"], abs=EPS)
    first, second = steps
    assert first[PREFIX + "generation_s"] > 0 and first[PREFIX + "rewards_s"] > 0
    if path == "trl":
        assert first[PREFIX + "logprob_s"] > 0  # the old-policy forward of a batch that outlives a step
        assert second[PREFIX + "generation_s"] == second[PREFIX + "rewards_s"] == second[PREFIX + "logprob_s"] == 0
    else:
        assert second[PREFIX + "generation_s"] > 0  # one generation batch per step
        assert all("rollouts/score_wait_s" in r for r in steps)


def test_summary_has_the_mean_step_cost_and_shares_that_add_up(cost_run):
    _, steps, summary, printed = cost_run
    cost = summary["step_cost"]
    assert cost["steps"] == 2
    assert set(cost["share"]) == set(PARTS) and sum(cost["share"].values()) == pytest.approx(1, abs=1e-3)
    assert cost["seconds"]["step"] == pytest.approx(sum(r[PREFIX + "step_s"] for r in steps) / 2, abs=1e-3)
    assert cost["overlap_saved_s"] >= 0


def test_train_prints_the_step_cost_just_before_its_last_line(cost_run):
    _, _, summary, printed = cost_run
    assert printed[-2] == "k2rl: " + summary_line(summary["step_cost"])
    assert printed[-1].startswith("k2rl: eval accuracy before=")
