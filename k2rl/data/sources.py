"""Task data for a run: a built-in generator, an HF dataset id, or a JSONL / Parquet file.

Whatever the source, the result has a conversational ``prompt`` column (TRL's format) and an
``answer`` column; other columns pass through to the rewards as keyword arguments. Column names in
the source are mapped with ``data.columns`` (k2rl name -> source name).

A named evaluation set (``EVAL_SETS``: ``humaneval``) is held-out data only. It is what ``k2rl eval``
scores when it is ``data.source``, and the held-out side of any recipe as ``data.eval_source``; a
recipe that would *train* on it is refused, since a benchmark trained on no longer measures anything.
Its columns already have k2rl's names, so ``data.columns`` (which maps the training source) and
``data.options`` (generator settings) do not apply to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets import Dataset

from k2rl.config import DataConfig
from k2rl.config.loading import source_of
from k2rl.errors import K2RLError
from k2rl.jsonl import data_file, json_objects
from k2rl.data.arithmetic import BUILTIN_TASKS, check_task_options, demonstration_text
from k2rl.data.humaneval import humaneval

DEFAULT_TRAIN_SIZE = 4000

# Fixed held-out sets by name; each loader takes the recipe setting that named it, for its error lines.
EVAL_SETS = {"humaneval": humaneval}

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
    path = data_file(source)
    if path is not None:
        suffix = path.suffix.lower()
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


def _to_task_columns(dataset: Dataset, config: DataConfig, origin: str, mapped: bool = True) -> Dataset:
    """Rename mapped columns (``mapped``: the source's names are not k2rl's), check the required ones exist,
    build the chat prompt."""
    columns = config.columns if mapped else {}
    mapping = {"question": "question", "answer": "answer", **columns}
    renames = {}
    for ours, theirs in mapping.items():
        if theirs not in dataset.column_names:
            if ours in ("question", "answer") or ours in columns:
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


def _check_sizes(config: DataConfig) -> None:
    for key in ("train_size", "eval_size"):
        value = getattr(config, key)
        if value is not None and value < 1:
            raise K2RLError(f"data.{key} must be at least 1, got {value}")


def _task_rows(rows: Dataset, config: DataConfig, origin: str, split: str, mapped: bool = True) -> Dataset:
    if len(rows) == 0:
        raise K2RLError(f"dataset {origin}: the {split} split has no rows")
    return _to_task_columns(rows, config, origin, mapped)


def _eval_set(config: DataConfig, key: str) -> Dataset:
    """The evaluation set named by ``data.KEY``: its first ``data.eval_size`` rows, in its own order."""
    name = getattr(config, key)
    rows = EVAL_SETS[name](f"data.{key}: {name}")
    return _task_rows(rows.select(range(min(config.eval_size, len(rows)))), config, f"evaluation set {name!r}",
                      "held-out", mapped=False)


def _generated(config: DataConfig, seed: int) -> tuple[Dataset, Dataset]:
    """(training, held-out) rows of a built-in generator, with ``data.options`` as its settings."""
    options = dict(config.options)
    check_task_options(config.source, options)
    return BUILTIN_TASKS[config.source](
        train_size=config.train_size or DEFAULT_TRAIN_SIZE,
        eval_size=config.eval_size,
        seed=options.pop("seed", seed),  # data.options.seed: the task's items apart from the run's seed
        **options,
    )


def _loaded(config: DataConfig, seed: int) -> tuple[Dataset, Dataset | None]:
    """(training, held-out) rows of a dataset id or file; no held-out rows when ``data.eval_source`` names them."""
    if config.options:
        where = source_of(config, "options")
        raise K2RLError(f"data.options is only for built-in tasks, not for {config.source!r}"
                        + (f" (data.options set in {where}; `options: null` under data: removes it)" if where else ""))
    train = _load_source(config.source, config.split)
    if config.eval_source:
        held_out = None  # read by the caller, as for any source
    elif config.eval_split:
        held_out = _load_source(config.source, config.eval_split)
    else:  # carve the held-out set out of the training source
        if len(train) < 5:
            raise K2RLError(f"dataset {config.source} has {len(train)} row(s): too few to hold out an eval set "
                            "(at least 5); add rows or name one with data.eval_source or data.eval_split")
        if config.eval_size > len(train) // 5:
            raise K2RLError(f"data.eval_size={config.eval_size}, but {config.source} has {len(train)} rows, of which at "
                            f"most a fifth ({len(train) // 5}) are held out; lower data.eval_size or name the "
                            "held-out rows with data.eval_source or data.eval_split")
        parts = train.train_test_split(test_size=config.eval_size, seed=seed)
        train, held_out = parts["train"], parts["test"]
    if config.train_size:
        train = train.select(range(min(config.train_size, len(train))))
    return train, held_out


def load_task_data(config: DataConfig, seed: int) -> TaskData:
    """Train and held-out splits with ``prompt`` and ``answer`` columns.

    ``data.eval_source`` replaces the source's own held-out rows, whatever the source: a dataset id, a
    file, or a named evaluation set (then it is the held-out side of a recipe that trains on something else).
    """
    _check_sizes(config)
    if config.source in EVAL_SETS:
        raise K2RLError(f"data.source: {config.source} is an evaluation set, not training data (training on it "
                        f"contaminates the benchmark); score a model on it with k2rl eval, or train on another "
                        f"source with data.eval_source: {config.source}")
    builtin = config.source in BUILTIN_TASKS
    train, held_out = (_generated if builtin else _loaded)(config, seed)
    origin = f"built-in task {config.source!r}" if builtin else config.source
    if config.eval_source in EVAL_SETS:
        held_out = _eval_set(config, "eval_source")
    else:
        held_out_origin = origin
        if config.eval_source:
            held_out = _load_source(config.eval_source, config.eval_split or config.split)
            held_out_origin = config.eval_source
        if (config.eval_source or not builtin) and len(held_out) < config.eval_size:  # a generator draws exactly
            raise K2RLError(f"data.eval_size={config.eval_size}, but the held-out rows of {held_out_origin} are "
                            f"{len(held_out)}; lower data.eval_size to at most {len(held_out)}")
        held_out = _task_rows(held_out.select(range(min(config.eval_size, len(held_out)))), config, held_out_origin,
                              "held-out")
    return TaskData(train=_task_rows(train, config, origin, "training"), eval=held_out)


def task_data_from(train: Dataset, held_out: Dataset | None, config: DataConfig, seed: int) -> TaskData:
    """Rows handed over in code (the Python API's ``train_dataset``/``eval_dataset``), prepared exactly as
    a file's would be: ``data.columns`` mapping, the chat prompt, held-out rows carved out of ``train``
    when none are given (``data.eval_size`` of them, checked as for a file)."""
    _check_sizes(config)
    for name, rows in (("train_dataset", train), ("eval_dataset", held_out)):
        if rows is not None and not isinstance(rows, Dataset):
            raise K2RLError(f"{name} must be a datasets.Dataset, got {type(rows).__name__}")
    if held_out is None:
        if config.eval_size > len(train) // 5:
            raise K2RLError(f"data.eval_size={config.eval_size}, but train_dataset has {len(train)} rows, of which at "
                            f"most a fifth ({len(train) // 5}) are held out; lower data.eval_size or pass eval_dataset")
        parts = train.train_test_split(test_size=config.eval_size, seed=seed)
        train, held_out = parts["train"], parts["test"]
        held_out = _task_rows(held_out, config, "train_dataset", "held-out")
    else:
        held_out = held_out_from(held_out, config)
    if config.train_size:
        train = train.select(range(min(config.train_size, len(train))))
    return TaskData(train=_task_rows(train, config, "train_dataset", "training"), eval=held_out)


def held_out_from(rows: Dataset, config: DataConfig) -> Dataset:
    """``data.eval_size`` held-out rows of a Dataset given in code, prepared as a file's rows."""
    if not isinstance(rows, Dataset):
        raise K2RLError(f"eval_dataset must be a datasets.Dataset, got {type(rows).__name__}")
    if len(rows) < config.eval_size:
        raise K2RLError(f"data.eval_size={config.eval_size}, but eval_dataset has {len(rows)} rows; "
                        f"lower data.eval_size to at most {len(rows)}")
    return _task_rows(rows.select(range(config.eval_size)), config, "eval_dataset", "held-out")


def held_out_data(config: DataConfig, seed: int) -> Dataset:
    """The rows ``k2rl eval`` scores: the recipe's held-out split, or the evaluation set named as ``data.source``."""
    if config.source not in EVAL_SETS:
        return load_task_data(config, seed).eval
    _check_sizes(config)
    if config.options:
        raise K2RLError(f"data.options do not apply to data.source: {config.source} (a fixed evaluation set); "
                        "remove them")
    if config.eval_source or config.eval_split:
        raise K2RLError(f"data.source: {config.source} is itself the held-out data; remove data.eval_source and "
                        "data.eval_split")
    return _eval_set(config, "source")


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
