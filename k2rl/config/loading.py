"""Reading a recipe: YAML (with ``extends:``), dotted command-line overrides, and validation of every
key and type into :mod:`.sections`, so a typo or a wrong type is one line naming the key and the file
the value came from (the recipe, a parent it extends, or a command-line override), with "did you
mean" for a misspelt key.

``extends:`` merges the child over its parent section by section; ``key: null`` in the child removes
what the parent set for ``key`` (a value or a whole section), so the default applies again; so does a
``key=null`` override.

This module imports nothing heavy: a recipe mistake is reported before torch or TRL load.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from k2rl.config.sections import RunConfig
from k2rl.config.suggest import did_you_mean
from k2rl.errors import K2RLError

Sources = dict[str, str]  # dotted key -> where its value came from (a file, or "override key=value")

def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; raise ValueError naming ``key``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp in (list, dict):  # a bare annotation, as in TRL's configs: any items
        tp = list[Any] if tp is list else dict[str, Any]
        origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):  # TRL's and transformers' option enums, by value
        values = [member.value for member in tp]
        if value not in values:
            raise ValueError(f"{key}: expected one of {', '.join(repr(v) for v in values)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if len(errors) == 1 else f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            allowed = ", ".join(repr(a) for a in typing.get_args(tp))
            raise ValueError(f"{key}: expected one of {allowed}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        _, value_tp = typing.get_args(tp)
        return {str(k): _convert(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, key)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp in (str, bool):
        if type(value) is not tp:
            raise ValueError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # a bug in this module


def convert_value(value: Any, annotation: Any, key: str) -> Any:
    """``value`` checked against a dataclass field's ``annotation`` (ValueError naming ``key``; TypeError for
    an annotation a recipe cannot express)."""
    return _convert(value, annotation, key)


def _build_dataclass(cls, data: Any, prefix: str):
    if not isinstance(data, dict):
        raise ValueError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            dotted = f"{prefix}.{key}" if prefix else str(key)
            raise ValueError(f"unknown key '{dotted}'{did_you_mean(key, fields)}")
    kwargs = {}
    for name, f in fields.items():
        dotted = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], dotted)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"missing required key '{dotted}'")
    return cls(**kwargs)


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; recipes mean a number (as YAML 1.2 does)."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _parse_yaml(text: str):
    return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass


def _leaves(tree: dict, where: str, prefix: str = "") -> Sources:
    """Every dotted key of ``tree`` (sections and values) marked as coming from ``where``."""
    marks = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        marks[dotted] = where
        if isinstance(value, dict):
            marks.update(_leaves(value, where, f"{dotted}."))
    return marks


def _forget(sources: Sources, dotted: str) -> None:
    for key in [k for k in sources if k == dotted or k.startswith(dotted + ".")]:
        del sources[key]


_UNSET = object()


def _apply_override(tree: dict, override: str, sources: Sources, value: Any = _UNSET) -> None:
    """``key.path=value`` into ``tree`` (``value``: a Python value given in code instead of the YAML text)."""
    if "=" not in override:
        raise K2RLError(f"override {override!r} must look like key.path=value")
    dotted, raw = override.split("=", 1)
    if value is _UNSET:
        try:
            value = _parse_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:  # e.g. a flow mapping the shell split at a space: quote the override
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise K2RLError(f"override {override!r}: its value is not valid YAML ({problem}); "
                            "quote the whole override if it holds spaces") from None
    else:
        override = f"{dotted}={value!r}"
    parts = dotted.strip().split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise K2RLError(f"override {override!r}: '{part}' is not a section")
        node = child
    _forget(sources, dotted.strip())
    if value is None and parts[-1] in node:  # `key=null` removes what the recipe set, as in `extends:`
        del node[parts[-1]]
        return
    node[parts[-1]] = value
    sources[dotted.strip()] = f"override {override}"
    if isinstance(value, dict):
        sources.update(_leaves(value, f"override {override}", f"{dotted.strip()}."))


def _merge(base: dict, child: dict, sources: Sources, where: str, prefix: str = "") -> dict:
    """``child`` over ``base``: sections merge key by key, anything else (lists included) replaces, and
    ``key: null`` over a key ``base`` has removes it."""
    merged = dict(base)
    for key, value in child.items():
        dotted = f"{prefix}{key}"
        if value is None and key in base:
            del merged[key]
            _forget(sources, dotted)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            sources[dotted] = where
            merged[key] = _merge(base[key], value, sources, where, f"{dotted}.")
        else:
            _forget(sources, dotted)
            merged[key] = value
            sources.update(_leaves({key: value}, where, prefix))
    return merged


def _read_recipe(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict, Sources]:
    """The recipe's tree with its ``extends:`` parent (a path relative to the recipe) merged underneath,
    and where each key's value came from.

    Variants of a recipe (another algorithm, expert selection) name only what differs, so they cannot
    drift from the recipe they are compared with.
    """
    if not path.is_file():
        raise K2RLError(f"config file not found: {path}" + (f" (extended by {chain[-1]})" if chain else ""))
    if path.resolve() in chain:
        raise K2RLError(f"{path}: 'extends' loops back to itself")
    try:
        tree = _parse_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise K2RLError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(tree, dict):
        raise K2RLError(f"{path}: a recipe must be a mapping of sections")
    parent = tree.pop("extends", None)
    if parent is None:
        return tree, _leaves(tree, str(path))
    if not isinstance(parent, str):
        raise K2RLError(f"{path}: 'extends' must be a path to another recipe")
    base, sources = _read_recipe(path.parent / parent, (*chain, path.resolve()))
    return _merge(base, tree, sources, str(path)), sources


_KEY_IN_ERROR = re.compile(r"^(?:unknown key |missing required key )?'?([A-Za-z0-9_.\[\]-]+?)'?(?::|$| \(|;)")


def _origin(message: str, sources: Sources, path: Path) -> str:
    """Where the key an error names got its value: the longest dotted prefix with a known source."""
    match = _KEY_IN_ERROR.match(message)
    if match:
        key = re.sub(r"\[\d+\]", "", match.group(1))
        parts = key.split(".")
        for end in range(len(parts), 0, -1):
            where = sources.get(".".join(parts[:end]))
            if where is not None:
                return where
        below = [where for dotted, where in sources.items() if dotted.startswith(key + ".")]
        if below:  # a section an override created
            return below[0]
    return str(path)


def load_config(path: str | Path, overrides: list[str] = (), values: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML recipe (and the recipe it ``extends``), apply ``key.path=value`` overrides, then
    ``values`` (``{"trainer.max_steps": 2}``: Python values, as the Python API passes them), validate."""
    path = Path(path)
    tree, sources = _read_recipe(path)
    for override in overrides:
        _apply_override(tree, override, sources)
    for dotted, value in (values or {}).items():
        _apply_override(tree, f"{dotted}=", sources, value=value)
    try:
        config = _build_dataclass(RunConfig, tree, "")
    except ValueError as exc:
        where = _origin(str(exc), sources, path)
        raise K2RLError(f"{exc} (in {where}" + (f", on {path})" if where.startswith("override") else ")")) from None
    config.__dict__["_sources"] = sources  # read by source_of, for errors found after loading
    for section in dataclasses.fields(config):
        value = getattr(config, section.name)
        if dataclasses.is_dataclass(value):
            prefix = section.name + "."
            value.__dict__["_sources"] = {k[len(prefix):]: v for k, v in sources.items() if k.startswith(prefix)}
    return config


def source_of(config, dotted: str) -> str | None:
    """Which file (or override) set ``dotted`` in ``config`` (a RunConfig, or one of its sections with a
    key relative to it), when it was loaded from a recipe."""
    sources = getattr(config, "_sources", None) or {}
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in sources:
            return sources[".".join(parts[:end])]
    return None


def config_to_dict(config: RunConfig) -> dict:
    """Plain-data form of a config, for writing the resolved recipe next to a run."""
    return dataclasses.asdict(config)
