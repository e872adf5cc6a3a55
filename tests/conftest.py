"""Shared fixtures: one tiny K2 policy built per test session (building is fast, but not free)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory):
    from k2rl.policy import init_policy

    return init_policy("k2-tiny", tmp_path_factory.mktemp("policy") / "k2-tiny", seed=0)
