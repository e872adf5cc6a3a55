"""Rewards named by import path -- ``package.module:function`` from an installed or importable module, and
``./file.py:function`` from a local file -- with the signature check a plugin gets, in `rewards check` and in
a recipe (issue 26, problem 8: such names were an ``unknown reward``)."""

from __future__ import annotations

import json
import re

import pytest

from k2rl.cli import main
from k2rl.config import load_config
from k2rl.errors import K2RLError
from k2rl.rewards import get_reward

REWARDS = '''
import re


def regex_answer(prompts, completions, pattern, **kwargs):
    return [float(bool(re.search(p, str(c)))) for p, c in zip(pattern, completions)]


def no_kwargs(prompts, completions):
    return [1.0 for _ in completions]
'''


@pytest.fixture
def package(tmp_path, monkeypatch):
    """``myreward.rewards`` importable from ``tmp_path``, and ``./local_rewards.py`` in the working directory."""
    (tmp_path / "myreward").mkdir()
    (tmp_path / "myreward" / "__init__.py").write_text("")
    (tmp_path / "myreward" / "rewards.py").write_text(REWARDS)
    (tmp_path / "local_rewards.py").write_text(REWARDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", ["myreward.rewards:regex_answer", "./local_rewards.py:regex_answer"])
def test_rewards_check_scores_with_a_reward_named_by_import_path(package, name, capsys):
    samples = package / "s.jsonl"
    samples.write_text("".join(json.dumps(row) + "\n" for row in [
        {"prompt": "p", "completion": "the answer is 42", "pattern": r"\b42\b"},
        {"prompt": "p", "completion": "the answer is 41", "pattern": r"\b42\b"},
    ]))
    assert main(["rewards", "check", name, "--samples", str(samples)]) == 0
    assert re.findall(r"line (\d+) +(\S+) +[\d.]+ ms", capsys.readouterr().out) == [("1", "1.0000"), ("2", "0.0000")]


def test_a_recipe_names_a_module_reward_and_its_declared_column_is_known(package):
    fn = get_reward("myreward.rewards:regex_answer")
    assert fn(prompts=["p"], completions=["42"], pattern=["42"]) == [1.0]
    config = load_config(_recipe(package, "myreward.rewards:regex_answer"))
    from k2rl.run.recipe_checks import check_recipe

    check_recipe(config)  # resolves, and the signature fits


@pytest.mark.parametrize("name, message", [
    ("myreward.rewards:no_kwargs", "must accept **kwargs"),
    ("myreward.rewards:regex_answr", "myreward.rewards has no 'regex_answr' (it has: no_kwargs, regex_answer)"),
    ("myreward.rewardz:regex_answer", "cannot import 'myreward.rewardz'"),
    ("./other.py:regex_answer", "no file other.py"),
])
def test_a_bad_import_path_is_one_line_in_a_recipe(package, name, message):
    from k2rl.run.recipe_checks import check_recipe

    config = load_config(_recipe(package, name))
    with pytest.raises(K2RLError, match=re.escape(message)):
        check_recipe(config)


def _recipe(folder, reward: str):
    path = folder / "recipe.yaml"
    path.write_text(f"policy: {{preset: k2-tiny}}\nrewards:\n  - name: {reward}\n")
    return path
