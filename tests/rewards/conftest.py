"""Shared fixtures for the reward tests."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from k2rl.rewards import plugins
from k2rl.rewards.registry import _REGISTRY

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "k2rl_plugin_demo"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    work = tmp_path_factory.mktemp("plugin")
    source = work / "src"
    shutil.copytree(FIXTURE, source)  # pip writes build files next to the sources
    target = work / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        check=True,
    )
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    for name in ("demo_brevity", "demo_broken"):
        _REGISTRY.pop(name, None)
        plugins._loaded.pop(name, None)
    sys.modules.pop("k2rl_plugin_demo", None)
