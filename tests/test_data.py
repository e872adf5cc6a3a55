import pytest

from k2rl.config import DataConfig
from k2rl.data import load_task_data, sft_dataset
from k2rl.errors import K2RLError
from k2rl.rewards.answer import answers_match
from k2rl.tasks import arithmetic_splits


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
        load_task_data(DataConfig(source=str(path)), seed=0)


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(K2RLError, match="dataset file not found"):
        load_task_data(DataConfig(source=str(tmp_path / "none.jsonl")), seed=0)


def test_second_operand_range():
    train, _ = arithmetic_splits(train_size=300, eval_size=10, seed=3, max_operand=99, max_second_operand=3)
    for row in train:
        numbers = _operands(row["question"])
        assert min(numbers) <= 3
