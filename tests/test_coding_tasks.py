"""The built-in coding task: references pass their hidden tests, slips pass some and fail others,
train and held-out never share a constant, the transfer split never shares a combination."""

import re

import pytest

from k2rl import resources
from k2rl.config import DataConfig
from k2rl.data.coding import AGGREGATES, FILTERS, HELD_OUT_COMBINATIONS, coding_item, coding_splits, held_out_problems
from k2rl.data.sources import load_task_data
from k2rl.errors import K2RLError
from k2rl.rewards import get_reward

_NAME = re.compile(r"function (\w+)_(\w+)\(xs\)")
_CONSTANT = re.compile(r"(?:than|of) (\d+)")


@pytest.fixture(scope="module", autouse=True)
def _close_sandboxes():
    yield
    resources.close_all()


def _parts(question: str) -> tuple[tuple[str, str], int]:
    aggregate, filter_name = _NAME.search(question).groups()
    return (filter_name, aggregate), int(_CONSTANT.search(question).group(1))


def _scores(rows: list[dict], code_column: str, mode: str = "pass_fraction") -> list[float]:
    reward = get_reward("unit_tests", mode=mode)
    completions = [[{"role": "assistant", "content": row[code_column]}] for row in rows]
    return reward(prompts=[None] * len(rows), completions=completions, tests=[r["tests"] for r in rows],
                  entry_point=[r["entry_point"] for r in rows])


def test_references_pass_and_every_slip_passes_some_tests_and_fails_others():
    rows = [coding_item(f, a, k, buggy=True) for f in FILTERS for a in AGGREGATES for k in (2, 7, 31)]
    assert _scores(rows, "answer", mode="all_or_nothing") == [1.0] * len(rows)
    slips = _scores(rows, "demonstration")
    assert all(0.0 < s < 1.0 for s in slips), slips
    assert _scores(rows, "demonstration", mode="all_or_nothing") == [0.0] * len(rows)


def test_held_out_constants_and_combinations_never_appear_in_training():
    train, held_out = coding_splits(3000, held_out_problems(), seed=3, buggy_fraction=0.5)
    train_parts = [_parts(q) for q in train["question"]]
    train_combinations = {c for c, _ in train_parts}
    train_constants = {k for _, k in train_parts}
    held = [(_parts(q), split) for q, split in zip(held_out["question"], held_out["heldout"])]
    assert {k for (_, k), _ in held}.isdisjoint(train_constants)
    assert {c for (c, _), s in held if s == "new_combinations"} == set(HELD_OUT_COMBINATIONS)
    assert {c for (c, _), s in held if s == "new_constants"} == train_combinations
    assert train_combinations.isdisjoint(HELD_OUT_COMBINATIONS)
    assert not set(train["question"]) & set(held_out["question"])
    # Every filter and aggregate of a held-out combination is trained in other combinations.
    assert {f for f, _ in HELD_OUT_COMBINATIONS} <= {f for f, _ in train_combinations}
    assert {a for _, a in HELD_OUT_COMBINATIONS} <= {a for _, a in train_combinations}


def test_buggy_fraction_sets_the_share_of_slipped_demonstrations():
    train, _ = coding_splits(2000, 10, seed=0, buggy_fraction=0.6)
    slipped = sum(d != a for d, a in zip(train["demonstration"], train["answer"]))
    assert 0.55 < slipped / len(train) < 0.65
    clean, _ = coding_splits(200, 10, seed=0)
    assert clean["demonstration"] == clean["answer"]


def test_eval_size_cuts_both_held_out_splits():
    _, held_out = coding_splits(10, 40, seed=1)
    assert len(held_out) == 40
    assert set(held_out["heldout"]) == {"new_constants", "new_combinations"}


def test_every_held_out_problem_is_the_largest_eval_size_and_more_is_refused_not_cut():
    _, held_out = coding_splits(10, held_out_problems(), seed=2)
    assert len(held_out) == held_out_problems() == len(set(held_out["question"])) == 264
    with pytest.raises(K2RLError, match="coding task: data.eval_size 265 is more than the 264 held-out problems"):
        coding_splits(10, 265, seed=2)


def test_fractions_outside_zero_one_are_refused():
    with pytest.raises(K2RLError, match="buggy_fraction"):
        load_task_data(DataConfig(source="coding", options={"buggy_fraction": 1.5}), seed=0)


def test_the_removed_tool_variant_s_option_is_refused():
    with pytest.raises(K2RLError, match="data.options.tool_fraction: not an option of the built-in task 'coding'"):
        load_task_data(DataConfig(source="coding", options={"tool_fraction": 0.5}), seed=0)


