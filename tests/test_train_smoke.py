"""A few-step end-to-end run of `k2rl train` on CPU: every phase, every output file, only adapters change."""

import json

import pytest
import torch
from peft import PeftModel

from k2rl.cli import main
from k2rl.policy.build import load_policy
from precision_watch import assert_full_precision, watch_precision

FAST = [
    "data.train_size=64",
    "data.eval_size=16",
    "warm_start.max_steps=3",
    "trainer.max_steps=3",
    "trainer.per_device_train_batch_size=8",
    "trainer.num_generations=4",
    "trainer.max_completion_length=8",
    "trainer.eval_steps=2",
    "trainer.logging_steps=1",
    "eval.max_new_tokens=8",
]

WATCHED: dict = {}  # what watch_precision saw during the smoke run


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, request):
    out = tmp_path_factory.mktemp("runs")
    recipe = request.config.rootpath / "configs" / "quickstart.yaml"
    with watch_precision() as seen:  # warm start, evaluation, RL generation and training forwards
        code = main(["train", str(recipe), f"output_dir={out}", "run_name=smoke", *FAST])
    assert code == 0
    WATCHED.update(seen)
    return out / "smoke"


def test_every_cpu_forward_ran_in_float32_without_autocast(smoke_run):
    assert_full_precision(WATCHED)


def test_summary_records_what_the_run_was_computed_on(smoke_run):
    env = json.loads((smoke_run / "summary.json").read_text())["environment"]
    assert env["packages"]["torch"] == torch.__version__
    assert set(env["packages"]) >= {"torch", "transformers", "trl", "peft", "accelerate", "datasets"}
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["threads"] == torch.get_num_threads() and env["device"] == "cpu" and env["cpu"]


def test_run_directory_has_every_output(smoke_run):
    for name in ("config.yaml", "metrics.jsonl", "progress.png", "summary.json", "summary.md", "adapter"):
        assert (smoke_run / name).exists(), name
    records = [json.loads(line) for line in (smoke_run / "metrics.jsonl").read_text().splitlines()]
    phases = {r["phase"] for r in records}
    assert {"warm_start", "rl", "eval"} <= phases
    assert any("reward" in r for r in records if r["phase"] == "rl")
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert 0 < summary["trainable_parameters"] <= 0.10 * summary["total_parameters"]


def test_adapter_loads_with_peft_and_only_adapters_changed(smoke_run):
    base = load_policy(str(smoke_run / "warm_start")).model
    frozen = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = PeftModel.from_pretrained(base, smoke_run / "adapter")
    adapter_tensors = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert adapter_tensors
    # RL moved the adapters (B starts at zero in PEFT; a trained adapter has non-zero B)...
    assert any(p.abs().sum() > 0 for n, p in adapter_tensors.items() if "lora_B" in n)
    # ...and nothing else: the base weights under the adapter are exactly the warm-start weights.
    for name, param in model.get_base_model().named_parameters():
        if "lora_" in name:
            continue
        key = name.replace("base_layer.", "").replace(".parametrizations", "").replace(".original", "")
        if key in frozen:
            assert torch.equal(param, frozen[key]), name


def test_last_line_is_machine_readable(smoke_run, capsys):
    summary = json.loads((smoke_run / "summary.json").read_text())
    from k2rl.run.outputs import final_line

    line = final_line(summary["accuracy_before"], summary["accuracy_after"], summary["wall_s"], smoke_run)
    assert line.startswith("k2rl: eval accuracy before=") and " delta=" in line and f"run_dir={smoke_run}" in line
