"""data.filter: pass@k difficulty filtering before RL, its files, its cache on resume, its validation."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from datasets import Dataset

from k2rl.config import DataConfig, PolicyConfig, RunConfig, TrainerConfig, load_config
from k2rl.config.rl_data import DifficultyFilterConfig
from k2rl.errors import K2RLError
from k2rl.policy.build import load_policy
from k2rl.run.difficulty import DIFFICULTY_FILE, HISTOGRAM_FILE, difficulty_filter_phase, kept_rows, pass_rates

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
K = 4


def test_bounds_are_inclusive_at_both_ends():
    rates = [0.0, 0.125, 0.5, 0.875, 1.0]
    assert kept_rows(rates, 0.125, 0.875) == [1, 2, 3]  # 0.125 and 0.875 sit exactly on the bounds
    assert kept_rows(rates, 0.1, 0.9) == [1, 2, 3]
    assert kept_rows(rates, 0.13, 0.5) == [2]
    assert kept_rows(rates, 0.0, 0.0) == [0]
    assert kept_rows(rates, 0.0, 1.0) == [0, 1, 2, 3, 4]


def _first_n_pass(prompts, completions, passes, **kwargs):
    """Full score for the first ``passes`` of each prompt's K samples (TRL's conversational completions);
    the last sample of each group fails (None), which counts as a miss."""
    assert all(c[0]["role"] == "assistant" and isinstance(c[0]["content"], str) for c in completions)
    return [None if i % K == K - 1 else float(i % K < n) for i, n in enumerate(passes)]


def _rows():
    questions = ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 1?", "What is 0 + 4?"]
    return Dataset.from_dict({
        "prompt": [[{"role": "user", "content": q}] for q in questions],
        "answer": ["2", "4", "4", "4"],
        "passes": [0, 1, 3, 2],  # -> pass rates 0, 1/4, 3/4, 2/4 (the 4th sample is None: a miss)
    })


def test_pass_rates_sample_k_answers_per_prompt_and_count_full_scores(tiny_policy_dir):
    policy = load_policy(str(tiny_policy_dir))
    rates = pass_rates(policy.model, policy.tokenizer, _rows(), _first_n_pass, K, temperature=1.0, max_new_tokens=3,
                       batch_size=5, seed=0)
    assert rates == [0.0, 0.25, 0.75, 0.5]


def _run(tmp_path, low, high, k=K):
    config = RunConfig(policy=PolicyConfig(preset="k2-tiny"), data=DataConfig(filter=DifficultyFilterConfig(k, low, high)),
                       trainer=TrainerConfig(max_completion_length=3))
    return SimpleNamespace(config=config, dir=tmp_path)


def test_the_phase_keeps_moderate_prompts_writes_its_files_and_reports(tiny_policy_dir, tmp_path, capsys):
    policy = load_policy(str(tiny_policy_dir))
    kept = difficulty_filter_phase(_run(tmp_path, 0.25, 0.5), policy.model, policy.tokenizer, _rows(), [_first_n_pass])
    assert list(kept["passes"]) == [1, 2]  # rates 0.25 and 0.5 are in [0.25, 0.5]; 0.0 and 0.75 are not
    records = [json.loads(line) for line in (tmp_path / DIFFICULTY_FILE).read_text().splitlines()]
    assert records == [{"id": i, "pass_rate": r, "k": K} for i, r in enumerate([0.0, 0.25, 0.75, 0.5])]
    assert (tmp_path / HISTOGRAM_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("k2rl:")]
    assert lines == ["k2rl: difficulty filter (pass@4 in [0.25, 0.5]): kept 2 of 4 prompts, dropped 2 "
                     f"({DIFFICULTY_FILE}, {HISTOGRAM_FILE})"]


def test_a_resumed_run_reuses_the_cached_pass_rates(tiny_policy_dir, tmp_path):
    policy = load_policy(str(tiny_policy_dir))
    difficulty_filter_phase(_run(tmp_path, 0.0, 1.0), policy.model, policy.tokenizer, _rows(), [_first_n_pass])

    def never(**kwargs):
        raise AssertionError("a cached run must not score again")

    # No model and a reward that fails: only the cache can answer. Other bounds apply to the cached rates.
    kept = difficulty_filter_phase(_run(tmp_path, 0.5, 1.0), None, policy.tokenizer, _rows(), [never])
    assert list(kept["passes"]) == [3, 2]
    # Another k is another measurement: sampled again.
    again = difficulty_filter_phase(_run(tmp_path, 0.0, 0.0, k=2), policy.model, policy.tokenizer, _rows(),
                                    [lambda prompts, completions, **kw: [0.0] * len(completions)])
    assert len(again) == 4
    assert {json.loads(line)["k"] for line in (tmp_path / DIFFICULTY_FILE).read_text().splitlines()} == {2}


def test_no_prompt_kept_is_one_line(tiny_policy_dir, tmp_path):
    policy = load_policy(str(tiny_policy_dir))
    with pytest.raises(K2RLError, match="data.filter kept no training prompts"):
        difficulty_filter_phase(_run(tmp_path, 0.8, 1.0), policy.model, policy.tokenizer, _rows(), [_first_n_pass])


def test_no_filter_returns_the_prompts_untouched(tmp_path):
    run = SimpleNamespace(config=RunConfig(policy=PolicyConfig(preset="k2-tiny")), dir=tmp_path)
    rows = _rows()
    assert difficulty_filter_phase(run, None, None, rows, []) is rows
    assert not (tmp_path / DIFFICULTY_FILE).exists()


@pytest.mark.parametrize("overrides, message", [
    (["data.filter={pass_k: 8, min: 0.1, max: 1.5}"], "data.filter needs 0 <= min <= max <= 1, got min 0.1, max 1.5"),
    (["data.filter={min: 0.9, max: 0.1}"], "data.filter needs 0 <= min <= max <= 1"),
    (["data.filter={min: -0.1}"], "data.filter needs 0 <= min <= max <= 1"),
    (["data.filter={pass_k: 0}"], "data.filter.pass_k must be at least 1"),
    (["data.filter={pass_k: 8, top: 1}"], "unknown key 'data.filter.top'"),
    (["data.filter={pass_k: 4}", "rewards=[{name: rubric}, {name: exact_answer}]"], "put the rubric reward after it"),
])
def test_bad_filter_options_are_one_line_before_any_model(overrides, message):
    with pytest.raises(K2RLError, match=message.replace("[", r"\[")) as caught:
        load_config(QUICKSTART, overrides)
    assert "\n" not in str(caught.value)


def test_the_documented_filter_loads():
    config = load_config(QUICKSTART, ["data.filter={pass_k: 8, min: 0.1, max: 0.9}"])
    assert config.data.filter == DifficultyFilterConfig(pass_k=8, min=0.1, max=0.9)
