"""Plugins: a reward package found through the ``k2rl.rewards`` entry-point group alone.

The fixture package in ``tests/fixtures/k2rl_plugin_demo`` is installed with pip into a temporary
target directory (see ``conftest.py``; the shared environment is left alone) and put on the path of
this process and of a ``k2rl`` subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest

from k2rl.errors import K2RLError
from k2rl.rewards import available_rewards, build_reward_funcs, plugins

def test_plugin_is_listed_by_the_cli(installed_plugin, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed_plugin), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-m", "k2rl.cli", "rewards", "list"], capture_output=True, text=True, env=env,
        cwd=tmp_path, check=True,
    ).stdout
    line = next(line for line in out.splitlines() if line.startswith("demo_brevity"))
    assert "plugin: k2rl-plugin-demo 0.0.1" in line and "1.0 for completions of at most" in line
    assert any(line.startswith("math ") for line in out.splitlines())


def test_plugin_composes_with_a_builtin(installed_plugin):
    assert "demo_brevity" in available_rewards()
    funcs, weights = build_reward_funcs(
        [{"name": "demo_brevity", "weight": 0.5, "options": {"max_chars": 10}}, {"name": "format"}]
    )
    assert [f.__name__ for f in funcs] == ["demo_brevity", "format"] and weights == [0.5, 1.0]
    completions = ["\\boxed{4}", "x" * 6 + " \\boxed{4}"]
    assert funcs[0](prompts=["p", "p"], completions=completions) == [1.0, pytest.approx(0.4)]
    assert funcs[1](prompts=["p", "p"], completions=completions) == [1.0, 1.0]


def _fake_entry_points(*eps):
    return lambda group: [ep for ep in eps if ep.group == group]


def test_broken_plugin_is_an_error_naming_it(monkeypatch):
    broken = EntryPoint(name="broken_verifier", value="no_such_module_k2rl:reward", group="k2rl.rewards")
    monkeypatch.setattr(plugins, "entry_points", _fake_entry_points(broken))
    with pytest.raises(K2RLError, match="reward plugin 'broken_verifier' .* failed to load: ModuleNotFoundError"):
        available_rewards()
    with pytest.raises(K2RLError, match="broken_verifier"):
        build_reward_funcs(["broken_verifier"])


def test_plugin_pointing_at_a_non_callable_is_an_error(monkeypatch):
    odd = EntryPoint(name="odd", value="k2rl.rewards.math:DEFAULT_TIMEOUT_S", group="k2rl.rewards")
    monkeypatch.setattr(plugins, "entry_points", _fake_entry_points(odd))
    with pytest.raises(K2RLError, match="'odd' .* points at a float"):
        available_rewards()


def test_plugins_load_lazily(monkeypatch):
    broken = EntryPoint(name="broken_verifier", value="no_such_module_k2rl:reward", group="k2rl.rewards")
    monkeypatch.setattr(plugins, "entry_points", _fake_entry_points(broken))
    funcs, _ = build_reward_funcs(["format"])  # a built-in never touches plugins
    assert funcs[0].__name__ == "format"
