"""Shared fixtures: one tiny K2 policy built per test session (building is fast, but not free)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory):
    from k2rl.policy.build import init_policy

    return init_policy("k2-tiny", tmp_path_factory.mktemp("policy") / "k2-tiny", seed=0)


@pytest.fixture(scope="session")
def worked_vs_bare():
    """Labelled critic prompts: a worked answer against a wrong bare one, each comparison in both orders
    (winner as A, then as B), on the core rubric in the compact style."""
    from pathlib import Path

    from k2rl.rewards.rubric import load_rubric
    from k2rl.rewards.rubric.prompt import critic_messages

    rubric = load_rubric(Path(__file__).resolve().parents[1] / "configs" / "rubrics" / "core.yaml")
    examples = []
    for x, y, z in ((2, 3, 4), (7, 1, 5), (6, 6, 2), (9, 4, 3)):
        worked, bare = f"{x} + {y} = {x + y}. {x + y} - {z} = {x + y - z}. The answer is {x + y - z}.", "The answer is 1."
        question = [{"role": "user", "content": f"What is {x} + {y} - {z}?"}]
        examples.append((critic_messages(question, worked, bare, rubric, "compact"), "Verdict: A"))
        examples.append((critic_messages(question, bare, worked, rubric, "compact"), "Verdict: B"))
    return examples
