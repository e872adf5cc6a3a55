"""``k2rl rewards list`` and ``k2rl rewards check``."""

from __future__ import annotations

import json
import re

import pytest

from k2rl.cli import main
from k2rl.rewards import register_reward
from k2rl.rewards.registry import _REGISTRY


def write_jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_list_shows_builtins_with_their_first_docstring_line(capsys):
    assert main(["rewards", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    by_name = {line.split()[0]: (line, lines[i + 1]) for i, line in enumerate(lines) if not line.startswith(" ")}
    assert {"math", "format", "length_penalty", "exact_answer"} <= set(by_name)
    summary, options = by_name["math"]
    assert "mathematically equal to the gold column" in summary and "[built-in]" in summary
    assert options.split() == ["options:", "column,", "check_timeout_s,", "workers,", "timeout_reward"]


def test_check_prints_scores_timing_and_summary(tmp_path, capsys):
    samples = write_jsonl(tmp_path / "s.jsonl", [
        {"prompt": "p", "completion": "\\boxed{3}", "answer": "3"},
        {"prompt": "p", "completion": [{"role": "assistant", "content": "answer is 3"}]},
        "",
        {"prompt": "p", "completion": "none"},
    ])
    assert main(["rewards", "check", "format", "--samples", str(samples), "--option", "style=boxed"]) == 0
    out = capsys.readouterr().out
    assert "reward 'format' on 3 samples" in out
    rows = re.findall(r"line (\d+) +(\S+) +[\d.]+ ms", out)
    assert rows == [("1", "1.0000"), ("2", "0.0000"), ("4", "0.0000")]  # numbered by file line
    assert "samples   3 (3 scored, 0 abstained, 0 failed)" in out
    assert "mean 0.3333" in out


@pytest.fixture
def flaky():
    @register_reward("test_flaky")
    def flaky_reward(prompts, completions, **kwargs):
        if "boom" in completions[0]:
            raise RuntimeError("cannot score this one")
        return [float("nan")] if "nan" in completions[0] else [1.0]

    @register_reward("test_async_judge")
    async def async_judge(prompts, completions, **kwargs):
        """An LLM-judge-like async reward."""
        return [0.25 * len(c) for c in completions]

    yield
    _REGISTRY.pop("test_flaky", None)
    _REGISTRY.pop("test_async_judge", None)


def test_check_reports_failures_per_sample_and_exits_3(flaky, tmp_path, capsys):
    samples = write_jsonl(tmp_path / "s.jsonl", [
        {"prompt": "p", "completion": "fine"},
        {"prompt": "p", "completion": "boom"},
        {"prompt": "p", "completion": "nan"},
        {"prompt": "p", "completion": "boom"},
    ])
    assert main(["rewards", "check", "test_flaky", "--samples", str(samples)]) == 3
    out = capsys.readouterr().out
    assert re.search(r"line 2 +FAILED .* ms  raised RuntimeError: cannot score this one", out)
    assert re.search(r"line 3 +FAILED .* ms  returned nan", out)
    assert "failures  2 x raised RuntimeError: cannot score this one" in out
    assert "(1 scored, 0 abstained, 3 failed)" in out


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"prompt": "p", "completion": "c"}\n{"prompt": "p", "completion": }\n', "s.jsonl line 2: not valid JSON"),
        ('{"prompt": "p"}\n', "s.jsonl line 1: missing 'completion'"),
        ('["p", "c"]\n', "s.jsonl line 1: expected a JSON object, got list"),
        ("\n\n", "has no samples"),
    ],
)
def test_bad_samples_file_is_one_clear_error(tmp_path, capsys, content, message):
    (tmp_path / "s.jsonl").write_text(content)
    assert main(["rewards", "check", "format", "--samples", str(tmp_path / "s.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("k2rl: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_bad_option_and_missing_file(tmp_path, capsys):
    assert main(["rewards", "check", "format", "--samples", str(tmp_path / "nope.jsonl")]) == 2
    assert "cannot read samples file" in capsys.readouterr().err
    write_jsonl(tmp_path / "s.jsonl", [{"prompt": "p", "completion": "c"}])
    assert main(["rewards", "check", "format", "--samples", str(tmp_path / "s.jsonl"), "--option", "style"]) == 2
    assert "--option must look like key=value" in capsys.readouterr().err


def test_options_are_read_as_yaml(tmp_path, capsys):
    write_jsonl(tmp_path / "s.jsonl", [{"prompt": "p", "completion": "abcdef"}])
    args = ["rewards", "check", "length_penalty", "--samples", str(tmp_path / "s.jsonl"),
            "--option", "unit=chars", "--option", "budget=2", "--option", "window=8"]
    assert main(args) == 0
    assert "-0.5000" in capsys.readouterr().out


def test_check_runs_async_rewards(flaky, tmp_path, capsys):
    write_jsonl(tmp_path / "s.jsonl", [{"prompt": "p", "completion": "ab"}])
    assert main(["rewards", "check", "test_async_judge", "--samples", str(tmp_path / "s.jsonl")]) == 0
    assert re.search(r"line 1 +0.5000", capsys.readouterr().out)


RAISING = """
def raise_on(prompts, completions, raise_on=None, **kwargs):
    if raise_on is not None and any(str(raise_on) in str(c) for c in completions):
        raise ValueError(f"cannot score {raise_on!r}")
    return [1.0 if "42" in str(c) else 0.0 for c in completions]


def sleepy(prompts, completions, **kwargs):
    import time
    time.sleep(10)
    return [0.0] * len(completions)
"""


def test_audit_isolates_a_raising_reward_and_exits_3_not_1(tmp_path, capsys, monkeypatch):
    (tmp_path / "mine.py").write_text(RAISING)
    monkeypatch.chdir(tmp_path)
    # the hacks of the math corpus that contain "1" trip the reward; the rest are scored as usual
    code = main(["rewards", "audit", "./mine.py:raise_on", "--corpus", "exact_answer", "--option", "raise_on=1"])
    captured = capsys.readouterr()
    assert code == 3, captured.out + captured.err
    assert "REWARD FAILED on" in captured.out and "raised ValueError: cannot score 1" in captured.out
    assert "Traceback" not in captured.err
    assert main(["rewards", "audit", "./mine.py:raise_on", "--corpus", "exact_answer",
                 "--options", '{"raise_on": "zzz"}']) in (0, 1)
    assert "REWARD FAILED" not in capsys.readouterr().out


def test_check_and_audit_share_option_syntax_and_the_timeout(tmp_path, capsys, monkeypatch):
    (tmp_path / "mine.py").write_text(RAISING)
    monkeypatch.chdir(tmp_path)
    samples = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "p", "completion": "42"}, {"prompt": "p", "completion": "37"}])
    assert main(["rewards", "check", "./mine.py:raise_on", "--samples", str(samples), "--options", '{"raise_on": 37}']) == 3
    out = capsys.readouterr().out
    assert "raised ValueError: cannot score 37" in out and "(1 scored, 0 abstained, 1 failed)" in out
    assert main(["rewards", "check", "./mine.py:sleepy", "--samples", str(samples), "--timeout", "0.2"]) == 3
    assert "timed out after 0.2s" in capsys.readouterr().out
    assert main(["rewards", "audit", "./mine.py:sleepy", "--corpus", "math", "--timeout", "0.2"]) == 3
    assert "timed out after 0.2s" in capsys.readouterr().out
