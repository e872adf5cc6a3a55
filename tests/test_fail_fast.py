"""Bad shapes and bad data stop `k2rl train` with one `k2rl: error:` line and exit 2, before any model is
built: building the policy, loading it and the warm start are all booby-trapped here."""

from __future__ import annotations

from pathlib import Path

import pytest

from k2rl.cli import main
from k2rl.config import load_config
from k2rl.data.sources import load_task_data
from k2rl.errors import K2RLError
from k2rl.run.preflight import check_before_building

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


@pytest.fixture
def train_fails(monkeypatch, tmp_path, capsys):
    """Runs `k2rl train quickstart.yaml OVERRIDES...`; returns (exit code, stderr lines)."""

    def never(*args, **kwargs):
        raise AssertionError("a model was built or warm-started before the input checks")

    monkeypatch.setattr("k2rl.run.phases.init_policy", never)
    monkeypatch.setattr("k2rl.run.phases.load_policy", never)
    monkeypatch.setattr("k2rl.run.phases.warm_start", never)
    out = tmp_path / "runs"

    def run(*overrides: str):
        code = main(["train", str(RECIPE), f"output_dir={out}", *overrides])
        lines = capsys.readouterr().err.strip().splitlines()
        assert not out.exists(), "no run directory for a run that cannot start"
        return code, lines

    return run


def _jsonl(tmp_path: Path, lines: list[str]) -> str:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def _rows(n: int) -> list[str]:
    return [f'{{"question": "What is {i} + 1?", "answer": "{i + 1}"}}' for i in range(n)]


def _data_source(path: str) -> list[str]:
    return [f"data.source={path}", "data.options=null", "data.eval_size=2"]


CASES = {
    "zero generations": (["trainer.num_generations=0"], "trainer.num_generations must be at least 2"),
    "one generation": (["trainer.num_generations=1"], "trainer.num_generations must be at least 2"),
    "batch not divisible": (
        ["trainer.per_device_train_batch_size=7", "trainer.num_generations=8"],
        "trainer.per_device_train_batch_size (7) x 1 process(es) x trainer.gradient_accumulation_steps (1) = 7, "
        "must be divisible by trainer.num_generations (8)",
    ),
    "eval size zero": (["data.eval_size=0"], "data.eval_size must be at least 1, got 0"),
    "zero warm-start batch": (["warm_start.batch_size=0"], "warm_start.batch_size must be at least 1"),
    "budget column absent": (["trainer.budget.column=task_type", "trainer.budget.default=8"],
                             "trainer.budget.column names column 'task_type'"),
    "reward column absent": (["rewards=[{name: exact_answer, options: {column: gold}}]"],
                             "rewards[0].options.column (exact_answer) names column 'gold'"),
    "trl key k2rl owns": (["trainer.trl.learning_rate=0.1"],
                          "trainer.trl.learning_rate: k2rl sets learning_rate itself; use trainer.learning_rate instead"),
    "trl key mistyped": (["trainer.trl.top_p=high"], "trainer.trl.top_p: expected a number, got str 'high'"),
    "trl field unknown": (["warm_start.trl.weight_decayy=0.1"],
                          "warm_start.trl.weight_decayy: SFTConfig has no field 'weight_decayy' (did you mean weight_decay?)"),
    "trl generation batch": (["trainer.trl.generation_batch_size=96"],
                             "trainer.trl.generation_batch_size (96) must be a positive multiple of"),
    "trl steps per generation": (["trainer.trl.steps_per_generation=1", "trainer.num_generations=3"],
                                 "trainer.trl.steps_per_generation (1) = 64, must be divisible by trainer.num_generations (3)"),
    "eval reward unknown": (["eval.rewards=[exact_answr]"], "exact_answr"),
    "eval by column absent": (["eval.by=task_type"], "eval.by names column 'task_type', which the held-out data"),
    "eval k negative": (["eval.k=-1"], "eval.k must be at least 0"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_shape_is_one_line_and_exit_2(train_fails, case):
    overrides, message = CASES[case]
    code, lines = train_fails(*overrides)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("k2rl: error: ") and message in lines[0], lines


def test_one_row_jsonl(train_fails, tmp_path):
    code, lines = train_fails(*_data_source(_jsonl(tmp_path, _rows(1))))
    assert code == 2 and len(lines) == 1
    assert "has 1 row(s): too few to hold out an eval set" in lines[0] and "data.eval_source" in lines[0]


def test_malformed_jsonl_names_its_line(train_fails, tmp_path):
    rows = _rows(20)
    rows[6] = '{"question": "What is 1 + 1?", "answer": 2'  # line 7: unterminated object
    code, lines = train_fails(*_data_source(_jsonl(tmp_path, rows)))
    assert code == 2 and len(lines) == 1
    assert lines[0].startswith("k2rl: error: ") and "data.jsonl line 7: not valid JSON" in lines[0], lines


def test_jsonl_line_that_is_not_an_object(train_fails, tmp_path):
    code, lines = train_fails(*_data_source(_jsonl(tmp_path, [*_rows(9), "[1, 2]"])))
    assert code == 2 and len(lines) == 1 and "data.jsonl line 10: expected a JSON object, got list" in lines[0]


def test_empty_jsonl(train_fails, tmp_path):
    code, lines = train_fails(*_data_source(_jsonl(tmp_path, ["", "  "])))
    assert code == 2 and len(lines) == 1 and lines[0].endswith("has no rows")


def test_missing_column(train_fails, tmp_path):
    code, lines = train_fails(*_data_source(_jsonl(tmp_path, ['{"q": "1 + 1", "answer": "2"}'] * 10)))
    assert code == 2 and len(lines) == 1 and "missing column 'question'" in lines[0]


def test_too_few_training_rows_for_one_generation_batch(train_fails, tmp_path):
    # 20 rows, 4 held out: 16 training prompts, but 64 completions / 2 generations = 32 prompts per batch.
    code, lines = train_fails(*_data_source(_jsonl(tmp_path, _rows(20))), "data.eval_size=4",
                              "trainer.num_generations=2")
    assert code == 2 and len(lines) == 1
    assert "16 training row(s), but each generation batch needs 32 distinct prompts" in lines[0], lines


def test_empty_eval_source(train_fails, tmp_path):
    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text("\n")
    code, lines = train_fails(*_data_source(_jsonl(tmp_path, _rows(100))), f"data.eval_source={eval_path}")
    assert code == 2 and len(lines) == 1 and f"{eval_path} has no rows" in lines[0]


def test_global_batch_counts_every_process():
    config = load_config(RECIPE, ["trainer.per_device_train_batch_size=4", "data.train_size=64", "data.eval_size=8"])
    data = load_task_data(config.data, config.seed)
    check_before_building(config, data, num_processes=2)  # 4 x 2 = 8 completions: one group of 8
    with pytest.raises(K2RLError, match=r"x 1 process\(es\) .* = 4, must be divisible by trainer.num_generations \(8\)"):
        check_before_building(config, data, num_processes=1)


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


def _vllm_built() -> bool:
    from k2rl.rollouts.vllm_engine import vllm_python

    return vllm_python() is not None


@pytest.mark.parametrize("overrides, message", [
    (["data.options.nope=1"], "data.options.nope: not an option of the built-in task 'arithmetic'"),
    (["rollout.sandbox=bogus", "rollout.tools=[python]"], "rollout.sandbox: unknown sandbox backend 'bogus'"),
    (["rollout.sandbox=locl"], "did you mean 'local'?"),
    pytest.param(["report_to=[wandb]"], "report_to: wandb is not installed",
                 marks=pytest.mark.skipif(not _missing("wandb"), reason="wandb is installed here")),
    pytest.param(["report_to=[mlflow]"], "report_to: mlflow is not installed",
                 marks=pytest.mark.skipif(not _missing("mlflow"), reason="mlflow is installed here")),
    pytest.param(["report_to=[trackio]"], "report_to: trackio is not installed",
                 marks=pytest.mark.skipif(not _missing("trackio"), reason="trackio is installed here")),
    pytest.param(["rollout.backend=vllm"], "rollout.backend: vllm needs the vLLM environment",
                 marks=pytest.mark.skipif(_vllm_built(), reason="the vLLM environment is built here")),
    (["rollout.backend=vllm", "rollout.vllm_python=/nonexistent/bin/python"],
     "rollout.vllm_python: /nonexistent/bin/python does not exist"),
    (["data.eval_size=10000000"], "distinct items cannot be drawn"),
])
def test_named_components_options_and_sizes_fail_before_any_model(train_fails, overrides, message):
    code, lines = train_fails(*overrides)
    assert code == 2 and len(lines) == 1 and message in lines[0], lines


def test_a_column_a_reward_declares_is_checked_before_any_model(train_fails, tmp_path, monkeypatch):
    (tmp_path / "regex_rewards.py").write_text(
        "import re\n\ndef regex_answer(prompts, completions, pattern, **kwargs):\n"
        "    return [float(bool(re.search(p, str(c)))) for p, c in zip(pattern, completions)]\n")
    monkeypatch.chdir(tmp_path)
    code, lines = train_fails("rewards=[{name: ./regex_rewards.py:regex_answer}]")
    assert code == 2 and len(lines) == 1, lines
    assert "names column 'pattern', which the training data does not have" in lines[0]
    assert "regex_answer" in lines[0]
