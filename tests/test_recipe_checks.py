"""Every class of recipe mistake is one `k2rl: error:` line from `k2rl train`, raised before torch,
transformers, TRL or datasets are imported (what makes it fast): each case runs the CLI in a fresh
interpreter that reports, when `main` returns, which of those modules were loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "trl", "datasets", "peft", "accelerate")
PROBE = (
    "import json, sys\n"
    "from k2rl.cli import main\n"
    "code = main(sys.argv[1:])\n"
    f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    "sys.exit(code)\n"
)


def _k2rl(*argv: str, env: dict | None = None):
    """(exit code, stderr lines, heavy modules loaded) of `k2rl ARGV`."""
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    return done.returncode, done.stderr.strip().splitlines(), json.loads(done.stdout.strip().splitlines()[-1])


def _train(recipe: str, *overrides: str, env: dict | None = None):
    return _k2rl("train", str(ROOT / "configs" / f"{recipe}.yaml"), *overrides, env=env)


# (recipe, overrides, the error line's text): one case per class of mistake.
CASES = {
    "generation batch not divisible": ("quickstart", ["trainer.per_device_train_batch_size=3"],
                                       "= 3, must be divisible by trainer.num_generations (8)"),
    "num_generations not a divisor": ("quickstart", ["trainer.num_generations=7"],
                                      "must be divisible by trainer.num_generations (7)"),
    "one generation": ("quickstart_k2", ["trainer.num_generations=1"], "trainer.num_generations must be at least 2"),
    "TRL generation batch": ("quickstart", ["trainer.trl.generation_batch_size=96"],
                             "trainer.trl.generation_batch_size (96) must be a positive multiple of"),
    "TRL key k2rl owns": ("quickstart", ["trainer.trl.learning_rate=0.1"],
                          "trainer.trl.learning_rate: k2rl sets learning_rate itself; use trainer.learning_rate"),
    "warm-start TRL key k2rl owns": ("quickstart", ["warm_start.trl.max_steps=3"],
                                     "warm_start.trl.max_steps: k2rl sets max_steps itself; use warm_start.max_steps"),
    "temperature schedule": ("quickstart", ["trainer.temperature_schedule=linear"],
                             "trainer.temperature_schedule 'linear' needs trainer.temperature_end"),
    "budget": ("quickstart", ["trainer.budget.column=answer"], "trainer.budget.column is set but neither"),
    "a count below its least": ("quickstart_ppo", ["trainer.logging_steps=0"], "trainer.logging_steps must be at least 1, got 0"),
    "a rate not positive": ("quickstart", ["trainer.learning_rate=0"], "trainer.learning_rate must be positive, got 0"),
    "a fraction out of range": ("quickstart", ["reward_failures.max_failure_fraction=1.5"],
                                "reward_failures.max_failure_fraction must be between 0 and 1, got 1.5"),
    "TRL loss type": ("quickstart", ["trainer.loss_type=dapoo"], "trainer.loss_type: expected one of 'grpo'"),
    "LoRA targets": ("quickstart", ["trainer.lora.targets=[experts]"], "trainer.lora.targets: unknown ['experts']"),
    "policy preset": ("quickstart", ["policy.preset=k2-small"], "policy.preset: expected one of 'k2-tiny'"),
    "policy path": ("coding", ["policy.preset=null", "policy.model=./no/such/model"],
                    "model path does not exist: ./no/such/model"),
    "policy dtype": ("quickstart", ["policy.dtype=fp8"], "policy.dtype: expected one of 'float32'"),
    "pair that does not compose": ("rubric_mix", ["rollout.tools=[python]"],
                                   "rollout=tools does not compose with critic=on"),
    "unknown reward": ("quickstart", ["rewards=[{name: exact_answr}]"], "unknown reward 'exact_answr'"),
    "reward option": ("coding", ["rewards=[{name: unit_tests, options: {timeout: 3}}]"], "has no option(s) ['timeout']"),
    "reward timeout": ("quickstart", ["rewards=[{name: exact_answer, timeout_s: 0}]"],
                       "rewards[0].timeout_s (exact_answer) must be positive"),
    "import-path reward file": ("quickstart", ["rewards=[{name: ./no_such_file.py:score}]"], "no file no_such_file.py"),
    "evaluation reward": ("rubric_mix", ["eval.rewards=[rubric]"], "eval.rewards: rubric compares the completions of a group"),
    "evaluation size": ("quickstart", ["eval.batch_size=0"], "eval.batch_size must be at least 1, got 0"),
    "warm-start size": ("coding", ["warm_start.batch_size=0"], "warm_start.batch_size must be at least 1"),
    "data option": ("quickstart", ["data.options.nope=1"], "data.options.nope: not an option of the built-in task"),
    "generated size": ("quickstart", ["data.eval_size=10000000"], "distinct items cannot be drawn"),
    "coding held-out size": ("coding", ["data.eval_size=300"], "coding task: data.eval_size 300 is more than the 264"),
    "data file": ("quickstart", ["data.source=missing.jsonl", "data.options=null"], "dataset file not found: missing.jsonl"),
    "tool": ("quickstart", ["rollout.tools=[pyhton]"], "rollout.tools: unknown tool(s) ['pyhton']"),
    "environment": ("tool_use", ["rollout.environment=tool_uses"], "rollout.environment: unknown environment 'tool_uses'"),
    "sandbox": ("coding", ["rollout.sandbox=bogus"], "rollout.sandbox: unknown sandbox backend 'bogus'"),
    "unknown key": ("reasoning_gym", ["trainer.learning_rat=1e-3"], "did you mean"),
    "override that is not YAML": ("quickstart", ["rewards=[{name:"], "its value is not valid YAML"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_recipe_mistake_is_one_line_before_any_heavy_import(case):
    recipe, overrides, message = CASES[case]
    code, lines, heavy = _train(recipe, *overrides)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("k2rl: error: ") and message in lines[0], lines
    assert heavy == [], f"{heavy} imported before the error"


@pytest.mark.parametrize("argv, message", [
    (["eval", "configs/quickstart.yaml", "--model", "nowhere", "eval.kk=4"], "unknown key 'eval.kk'"),
    (["eval", "configs/quickstart.yaml", "eval.k=-1", "--model", "nowhere"], "eval.k must be at least 0, got -1"),
    (["rollouts", "configs/quickstart.yaml", "rewards=[{name: exact_answr}]"], "unknown reward 'exact_answr'"),
])
def test_eval_and_rollouts_report_a_recipe_mistake_before_any_heavy_import(argv, message):
    code, lines, heavy = _k2rl(*argv)
    assert code == 2 and len(lines) == 1 and message in lines[0] and heavy == [], (lines, heavy)


def test_the_launchers_process_count_is_read_from_the_environment():
    """`accelerate launch` / torchrun set WORLD_SIZE in each process: the shapes and the pairs that need
    the process count are checked with it, before torch could say how many processes there are."""
    code, lines, heavy = _train("quickstart", "trainer.per_device_train_batch_size=3", env={"WORLD_SIZE": "3"})
    assert code == 2 and "x 3 process(es)" in lines[0] and "= 9, must be divisible" in lines[0] and heavy == [], lines
    code, lines, heavy = _train("quickstart_ppo", env={"WORLD_SIZE": "2"})
    assert code == 2 and "algorithm=ppo does not compose with processes=2" in lines[0] and heavy == [], lines


def test_a_tracker_that_is_not_installed(tmp_path):
    # k2rl[trackers] installs trackio here, so the child interpreter hides it: a module whose sys.modules
    # entry is None is one importlib.util.find_spec does not find.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['trackio'] = None\n")
    code, lines, heavy = _train("quickstart", "report_to=[trackio]", env={"PYTHONPATH": str(tmp_path)})
    assert code == 2 and lines == ["k2rl: error: report_to: trackio is not installed (pip install trackio), "
                                   "or drop it from report_to"] and heavy == []


@pytest.mark.parametrize("overrides, message", [
    (["trainer.trl.auto_find_batch_size=true"], "trainer.trl: K2GRPOConfig rejects the settings: auto_find_batch_size"),
    (["trainer.trl.nope=1"], "trainer.trl.nope: K2GRPOConfig has no field 'nope'"),
])
def test_what_needs_trls_classes_is_still_one_line_before_any_model(overrides, message, monkeypatch, capsys, tmp_path):
    """Field names and types under trainer.trl, and TRL's own checks of their combination, are TRL's:
    they are read after TRL imports, but before data is drawn or a model built."""
    from k2rl.cli import main

    def never(*args, **kwargs):
        raise AssertionError("a model was built before the recipe's TRL fields were checked")

    monkeypatch.setattr("k2rl.run.phases.init_policy", never)
    monkeypatch.setattr("k2rl.run.phases.load_policy", never)
    assert main(["train", str(ROOT / "configs" / "quickstart.yaml"), f"output_dir={tmp_path}", *overrides]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_the_recipe_names_the_presets_and_dtypes_the_policy_room_builds():
    """The recipe's Literal lists (checked before torch loads) and the builders behind them are one set."""
    import typing

    from k2rl.config import PolicyConfig
    from k2rl.policy.build import PRESETS
    from k2rl.policy.precision import _DTYPES

    hints = typing.get_type_hints(PolicyConfig)
    assert set(typing.get_args(typing.get_args(hints["preset"])[0])) == set(PRESETS)
    assert set(typing.get_args(hints["dtype"])) == set(_DTYPES)
