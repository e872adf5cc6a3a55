"""Rubrics: what the critic is asked to judge, as data (YAML files or a dataset column).

A rubric file is one mapping::

    name: core                # shown in logs; defaults to the file name
    kind: core                # core | prescriptive | human
    weight: 1.0               # this rubric's share when verdicts of several rubrics are combined
    criteria:                 # at least one
      - name: clarity
        weight: 2.0           # relative importance, shown to the critic next to the criterion
        description: The response answers the question asked, plainly and without detours.

``kind`` says where a rubric comes from, after Kimi K2's self-critique reward: *core* rubrics are the
model's fundamental values, *prescriptive* rubrics are rules that close known reward hacks, *human*
rubrics are written for one task or one prompt. The kind matters in one place: closed-loop critic
refinement trains and measures the critic on core rubrics (the verifier speaks about correctness and
grounding, which is what core rubrics judge; it says nothing about flattery).

A per-prompt rubric comes from a dataset column, one value per row, in any of these forms: a string
(one criterion), a list of strings or criterion mappings, or a whole rubric mapping; its kind is
``human``. An empty value means "no per-prompt rubric for this row".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from k2rl.errors import K2RLError

KINDS = ("core", "prescriptive", "human")
_RUBRIC_KEYS = {"name", "kind", "weight", "criteria"}
_CRITERION_KEYS = {"name", "weight", "description"}


@dataclass(frozen=True)
class Criterion:
    name: str
    description: str
    weight: float = 1.0


@dataclass(frozen=True)
class Rubric:
    name: str
    kind: str
    criteria: tuple[Criterion, ...]
    weight: float = 1.0


def _weight(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise K2RLError(f"{where}: weight must be a positive number, got {value!r}")
    return float(value)


def _criterion(raw: Any, where: str) -> Criterion:
    if isinstance(raw, str):
        if not raw.strip():
            raise K2RLError(f"{where}: a criterion must not be empty")
        return Criterion(name=raw.strip().split()[0].strip(".,:;").lower() or "criterion", description=raw.strip())
    if not isinstance(raw, dict):
        raise K2RLError(f"{where}: a criterion is a string or a mapping, got {type(raw).__name__}")
    unknown = set(raw) - _CRITERION_KEYS
    if unknown:
        raise K2RLError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_CRITERION_KEYS)}")
    description = raw.get("description")
    if not isinstance(description, str) or not description.strip():
        raise K2RLError(f"{where}: a criterion needs a non-empty 'description'")
    name = raw.get("name", description.split()[0].lower())
    if not isinstance(name, str) or not name:
        raise K2RLError(f"{where}: criterion 'name' must be a non-empty string")
    return Criterion(name=name, description=description.strip(), weight=_weight(raw.get("weight", 1.0), where))


def parse_rubric(raw: Any, origin: str, default_name: str = "rubric", default_kind: str | None = None) -> Rubric:
    """A validated :class:`Rubric` from plain data; errors name ``origin`` and the bad key."""
    if isinstance(raw, (str, list)):
        raw = {"criteria": [raw] if isinstance(raw, str) else raw}
    if not isinstance(raw, dict):
        raise K2RLError(f"rubric {origin}: expected a mapping, got {type(raw).__name__}")
    unknown = set(raw) - _RUBRIC_KEYS
    if unknown:
        raise K2RLError(f"rubric {origin}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_RUBRIC_KEYS)}")
    kind = raw.get("kind", default_kind)
    if kind not in KINDS:
        raise K2RLError(f"rubric {origin}: 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    criteria = raw.get("criteria")
    if not isinstance(criteria, list) or not criteria:
        raise K2RLError(f"rubric {origin}: 'criteria' must be a non-empty list")
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise K2RLError(f"rubric {origin}: 'name' must be a non-empty string")
    return Rubric(
        name=name,
        kind=kind,
        criteria=tuple(_criterion(c, f"rubric {origin} criteria[{i}]") for i, c in enumerate(criteria)),
        weight=_weight(raw.get("weight", 1.0), f"rubric {origin}"),
    )


def load_rubric(path: str | Path) -> Rubric:
    """Read one rubric YAML file."""
    path = Path(path)
    if not path.is_file():
        raise K2RLError(f"rubric file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise K2RLError(f"rubric {path}: invalid YAML: {str(exc).splitlines()[0]}") from exc
    return parse_rubric(raw, str(path), default_name=path.stem)


def load_rubrics(items: Any) -> tuple[Rubric, ...]:
    """Rubrics from a recipe option: a path, a list of paths, or already-loaded :class:`Rubric` objects."""
    if items is None:
        return ()
    if isinstance(items, (str, Path, Rubric)):
        items = [items]
    return tuple(item if isinstance(item, Rubric) else load_rubric(item) for item in items)


def row_rubric(value: Any, row: int, column: str) -> Rubric | None:
    """The per-prompt (human) rubric in dataset column ``column`` at ``row``; None when the cell is empty."""
    if value is None or value == "" or value == [] or value == {}:
        return None
    return parse_rubric(value, f"column {column!r} row {row}", default_name=f"{column}[{row}]", default_kind="human")
