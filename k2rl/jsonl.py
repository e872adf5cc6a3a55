"""JSON Lines files a user hands k2rl (datasets, reward samples): one JSON object per non-blank line,
and the first line that is not one is a K2RLError naming its number."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from k2rl.errors import K2RLError


DATA_FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


def data_file(source: str, key: str = "data.source") -> Path | None:
    """``source`` as a local data file (by its suffix), or None for a dataset id or a built-in task; a file
    that does not exist is a K2RLError now (checked with the recipe, before anything loads)."""
    path = Path(source)
    if path.suffix.lower() not in DATA_FILE_SUFFIXES:
        return None
    if not path.is_file():
        raise K2RLError(f"dataset file not found: {source}" + ("" if key == "data.source" else f" ({key})"))
    return path


def json_objects(path: Path, what: str = "file") -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of ``path`` (``what``: the kind of file, for errors)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise K2RLError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        yield number, json_object(line, f"{path} line {number}")


def json_object(text: str, where: str) -> dict:
    """``text`` parsed as one JSON object; anything else is a K2RLError starting with ``where``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise K2RLError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise K2RLError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value
