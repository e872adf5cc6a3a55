import collections

import pytest

from k2rl.config import DataConfig
from k2rl.data.sources import load_task_data, sft_dataset
from k2rl.errors import K2RLError
from k2rl.rewards.answer import answers_match
from k2rl.data.arithmetic import WORKED_LEAD_INS, arithmetic_splits


def _operands(question: str) -> list[int]:
    return [int(tok) for tok in question.replace("?", " ").replace(".", " ").split() if tok.isdigit()]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_train_and_heldout_are_disjoint(seed):
    train, held_out = arithmetic_splits(train_size=3000, eval_size=300, seed=seed)
    assert len(set(train["question"])) == 3000
    assert not set(train["question"]) & set(held_out["question"])


def test_generated_answers_are_correct():
    train, _ = arithmetic_splits(train_size=200, eval_size=10, seed=0)
    for row in train:
        numbers = _operands(row["question"])
        a, b = numbers
        expected = a + b if ("+" in row["question"] or "more" in row["question"] or "total" in row["question"]) else a - b
        assert int(row["answer"]) == expected


def test_task_columns_and_sft_pairs():
    data = load_task_data(DataConfig(train_size=50, eval_size=10), seed=0)
    assert data.train[0]["prompt"][0]["role"] == "user"
    pair = sft_dataset(data.train)[0]
    assert answers_match(pair["completion"][0]["content"], data.train[0]["answer"])


def test_jsonl_with_column_mapping(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(f'{{"problem": "What is {i}+1?", "solution": "{i + 1}"}}\n' for i in range(50)))
    data = load_task_data(
        DataConfig(source=str(path), columns={"question": "problem", "answer": "solution"}, eval_size=10), seed=0
    )
    assert len(data.eval) == 10 and len(data.train) == 40
    assert not set(data.train["question"]) & set(data.eval["question"])
    assert data.train[0]["prompt"][0]["content"].startswith("What is")


def test_missing_column_is_one_clear_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"q": "1+1", "a": "2"}\n' * 5)
    with pytest.raises(K2RLError, match="missing column 'question'"):
        load_task_data(DataConfig(source=str(path), eval_size=1), seed=0)


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(K2RLError, match="dataset file not found"):
        load_task_data(DataConfig(source=str(tmp_path / "none.jsonl")), seed=0)


def test_second_operand_range():
    train, _ = arithmetic_splits(train_size=300, eval_size=10, seed=3, max_operand=99, max_second_operand=3)
    for row in train:
        numbers = _operands(row["question"])
        assert min(numbers) <= 3


def _chain(seed: int, worked_fraction: float):
    return arithmetic_splits(train_size=400, eval_size=50, seed=seed, max_operand=9, terms=3, worked_fraction=worked_fraction)


def test_chain_answers_are_correct_and_never_negative():
    train, held_out = _chain(seed=2, worked_fraction=1.0)
    assert not set(train["question"]) & set(held_out["question"])
    for row in train:
        expression = row["question"].removeprefix("What is ").removesuffix("?")
        assert eval(expression) == int(row["answer"])  # noqa: S307 - our own generated arithmetic
        steps = row["demonstration"].split(". ")[:-1]  # "a op b = c" ... then "The answer is N."
        assert len(steps) == 2
        for step in steps:
            left, result = step.split(" = ")
            assert eval(left) == int(result) >= 0  # noqa: S307
        assert answers_match(row["demonstration"], row["answer"])


def test_worked_fraction_sets_the_demonstration_style_only():
    bare, _ = _chain(seed=0, worked_fraction=0.0)
    mixed, _ = _chain(seed=0, worked_fraction=0.3)
    assert bare["question"] == mixed["question"]  # the style draw does not change the items
    assert all(d.startswith("The answer is") for d in bare["demonstration"])
    worked_share = sum("=" in d for d in mixed["demonstration"]) / len(mixed)
    assert 0.2 < worked_share < 0.4
    pairs = sft_dataset(mixed.map(lambda row: {"prompt": [{"role": "user", "content": row["question"]}]}))
    assert [p["completion"][0]["content"] for p in pairs] == list(mixed["demonstration"])


@pytest.mark.parametrize("options, message", [
    ({"terms": 1}, "terms"), ({"worked_fraction": 1.5}, "worked_fraction"), ({"terms": 3, "max_second_operand": 2}, "max_second_operand"),
])
def test_bad_task_options_are_one_clear_error(options, message):
    with pytest.raises(K2RLError, match=message):
        arithmetic_splits(train_size=10, eval_size=5, seed=0, **options)


def test_worked_lead_ins_vary_the_opening_only():
    plain, _ = arithmetic_splits(train_size=400, eval_size=50, seed=0, max_operand=9, terms=3, worked_fraction=0.6)
    led, _ = arithmetic_splits(train_size=400, eval_size=50, seed=0, max_operand=9, terms=3, worked_fraction=0.6,
                               worked_lead_ins=3)
    assert plain["question"] == led["question"] and plain["answer"] == led["answer"]
    openings = collections.Counter()
    for before, after in zip(plain["demonstration"], led["demonstration"]):
        if "=" not in before:
            assert after == before  # bare answers are untouched
            continue
        lead_in = after[: -len(before)].strip()
        assert after.endswith(before) and lead_in in WORKED_LEAD_INS[:3]
        openings[lead_in] += 1
    bare = sum("=" not in d for d in led["demonstration"])
    assert len(openings) == 3 and max(openings.values()) < bare  # no worked opening outweighs the bare answer


def test_worked_lead_ins_out_of_range_is_one_clear_error():
    with pytest.raises(K2RLError, match="worked_lead_ins must be between 0 and"):
        arithmetic_splits(train_size=10, eval_size=5, seed=0, terms=3, worked_lead_ins=9)


def test_a_held_out_size_the_data_cannot_give_is_refused_not_shrunk(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(f'{{"question": "q{i}", "answer": "{i}"}}\n' for i in range(300)))
    with pytest.raises(K2RLError, match=r"data\.eval_size=290, but .* has 300 rows, of which at most a fifth \(60\)"):
        load_task_data(DataConfig(source=str(path), eval_size=290), seed=0)
    assert len(load_task_data(DataConfig(source=str(path), eval_size=60), seed=0).eval) == 60
    small = tmp_path / "held.jsonl"
    small.write_text('{"question": "q", "answer": "1"}\n' * 3)
    with pytest.raises(K2RLError, match=r"held-out rows of .*held\.jsonl are 3"):
        load_task_data(DataConfig(source=str(path), eval_source=str(small), eval_size=10), seed=0)


def test_a_generated_size_that_cannot_exist_fails_at_once():
    with pytest.raises(K2RLError, match=r"10000000 distinct items cannot be drawn: at most \d+ exist"):
        load_task_data(DataConfig(eval_size=10_000_000), seed=0)


def test_an_unknown_data_option_is_one_line_naming_the_task_options():
    with pytest.raises(K2RLError, match=r"data\.options\.nope: not an option of the built-in task 'arithmetic' \(its options: max_operand"):
        load_task_data(DataConfig(options={"nope": 1}), seed=0)
    with pytest.raises(K2RLError, match=r"data\.options\.max_opernd: .*did you mean 'max_operand'\?"):
        load_task_data(DataConfig(options={"max_opernd": 9}), seed=0)
    with pytest.raises(K2RLError, match=r"data\.options\.nope: not an option of the built-in task 'coding'"):
        load_task_data(DataConfig(source="coding", options={"nope": 1}), seed=0)
