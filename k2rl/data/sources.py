"""Task data for a run: a built-in generator, an HF dataset id, or a JSONL / Parquet file.

Whatever the source, the result has a conversational ``prompt`` column (TRL's format) and an
``answer`` column; other columns pass through to the rewards as keyword arguments. Column names in
the source are mapped with ``data.columns`` (k2rl name -> source name).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets import Dataset

from k2rl.config import DataConfig
from k2rl.errors import K2RLError
from k2rl.jsonl import json_objects
from k2rl.data.arithmetic import BUILTIN_TASKS, demonstration_text

DEFAULT_TRAIN_SIZE = 4000

# Column mapping over a few thousand rows takes milliseconds; a progress bar per map is noise.
datasets.disable_progress_bars()


@dataclass
class TaskData:
    train: Dataset
    eval: Dataset


def _check_jsonl(path: Path) -> None:
    """Every non-blank line of a JSONL file is one JSON object (the first that is not is named), and there is one."""
    if not sum(1 for _ in json_objects(path, "dataset file")):  # reads every line
        raise K2RLError(f"dataset file {path} has no rows")


def _load_source(source: str, split: str) -> Dataset:
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".parquet"):
        if not path.is_file():
            raise K2RLError(f"dataset file not found: {source}")
        if suffix == ".jsonl":
            _check_jsonl(path)
        builder = "parquet" if suffix == ".parquet" else "json"
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as exc:  # datasets raises many types for malformed files
            raise K2RLError(f"cannot read dataset file {source}: {str(exc).splitlines()[0]}") from exc
    try:
        return datasets.load_dataset(source, split=split)
    except Exception as exc:
        raise K2RLError(f"cannot load dataset {source!r} split {split!r}: {str(exc).splitlines()[0]}") from exc


def _to_task_columns(dataset: Dataset, config: DataConfig, origin: str) -> Dataset:
    """Rename mapped columns, check the required ones exist, build the chat prompt."""
    mapping = {"question": "question", "answer": "answer", **config.columns}
    renames = {}
    for ours, theirs in mapping.items():
        if theirs not in dataset.column_names:
            if ours in ("question", "answer") or ours in config.columns:
                available = ", ".join(dataset.column_names)
                raise K2RLError(
                    f"dataset {origin}: missing column {theirs!r} (for {ours!r}; available: {available}); "
                    f"map it with data.columns.{ours}=NAME"
                )
            continue
        if theirs != ours:
            renames[theirs] = ours
    if renames:
        dataset = dataset.rename_columns(renames)
    system = config.system_prompt

    def build_prompt(row):
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": str(row["question"])})
        return {"prompt": messages, "answer": str(row["answer"])}

    return dataset.map(build_prompt)


def load_task_data(config: DataConfig, seed: int) -> TaskData:
    """Train and held-out splits with ``prompt`` and ``answer`` columns."""
    for key in ("train_size", "eval_size"):
        value = getattr(config, key)
        if value is not None and value < 1:
            raise K2RLError(f"data.{key} must be at least 1, got {value}")
    if config.source in BUILTIN_TASKS:
        options = dict(config.options)
        train, held_out = BUILTIN_TASKS[config.source](
            train_size=config.train_size or DEFAULT_TRAIN_SIZE,
            eval_size=config.eval_size,
            seed=options.pop("seed", seed),  # data.options.seed: the task's items apart from the run's seed
            **options,
        )
        origin = f"built-in task {config.source!r}"
    else:
        if config.options:
            raise K2RLError(f"data.options is only for built-in tasks, not for {config.source!r}")
        train = _load_source(config.source, config.split)
        if config.eval_source:
            held_out = _load_source(config.eval_source, config.eval_split or config.split)
        elif config.eval_split:
            held_out = _load_source(config.source, config.eval_split)
        else:  # carve the held-out set out of the training source
            if len(train) < 5:
                raise K2RLError(f"dataset {config.source} has {len(train)} row(s): too few to hold out an eval set "
                                "(at least 5); add rows or name one with data.eval_source or data.eval_split")
            parts = train.train_test_split(test_size=min(config.eval_size, len(train) // 5), seed=seed)
            train, held_out = parts["train"], parts["test"]
        if config.train_size:
            train = train.select(range(min(config.train_size, len(train))))
        held_out = held_out.select(range(min(config.eval_size, len(held_out))))
        origin = config.source
    for name, rows in (("training", train), ("held-out", held_out)):
        if len(rows) == 0:
            raise K2RLError(f"dataset {origin}: the {name} split has no rows")
    return TaskData(train=_to_task_columns(train, config, origin), eval=_to_task_columns(held_out, config, origin))


def sft_dataset(train: Dataset) -> Dataset:
    """Prompt/completion pairs for the warm start: the ``demonstration`` column where the data has one,
    otherwise the bare answer in the answer format.

    A row whose ``demonstration_messages`` holds a JSON list of chat messages (a tool-use turn, its
    result, the answer) is that conversation instead. Every message then carries the same keys, so the
    column has one Arrow type whichever kind of row comes first.
    """
    with_messages = "demonstration_messages" in train.column_names and any(train["demonstration_messages"])

    def message(role: str, content: str, tool_calls=None, tool_call_id=None) -> dict:
        return {"role": role, "content": content, "tool_calls": tool_calls, "tool_call_id": tool_call_id}

    def to_pair(row):
        if not with_messages:
            return {"completion": [{"role": "assistant", "content": demonstration_text(row)}]}
        if row["demonstration_messages"]:
            return {"completion": [message(**m) for m in json.loads(row["demonstration_messages"])]}
        return {"completion": [message("assistant", demonstration_text(row))]}

    return train.map(to_pair).select_columns(["prompt", "completion"])
