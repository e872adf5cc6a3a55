"""The shape of the package: every module imports on its own, no import circle between modules or
packages, private TRL/PEFT names
only behind their one door each, and no module grows past a few hundred lines."""

from __future__ import annotations

import ast
import multiprocessing
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> import name (pyproject's package-dir)
PACKAGES = {"k2rl": "k2rl", "rewards": "k2rl.rewards", "sandboxes": "k2rl.sandboxes", "rollouts": "k2rl.rollouts"}
TRL_DOOR = ROOT / "k2rl" / "trainer" / "_trl.py"
PEFT_DOOR = ROOT / "k2rl" / "experts" / "_peft.py"
MAX_LINES = 420  # "a few hundred lines": about 400, with a little slack for a docstring


def modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """k2rl modules ``path`` imports anywhere in its body (function-level imports count too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def _import_alone(name: str) -> str | None:
    import importlib

    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        return f"{type(exc).__name__}: {exc}"
    return None


def test_every_module_imports_on_its_own():
    # Third-party heavyweights once in the parent; each k2rl module then in a fresh fork of it, so no
    # other k2rl module has been imported first.
    import datasets, peft, torch, transformers, trl  # noqa: E401, F401

    names = sorted(modules())
    context = multiprocessing.get_context("fork")
    with context.Pool(2, maxtasksperchild=1) as pool:
        failures = {name: error for name, error in zip(names, pool.map(_import_alone, names, chunksize=1)) if error}
    assert not failures, failures


def test_the_import_graph_has_no_cycle():
    found = modules()
    graph = {name: imported_modules(path, name, set(found)) for name, path in found.items()}
    # A package's __init__ importing its own submodules is its face, not a dependency edge back.
    for name in graph:
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def package_of(name: str) -> str:
    """The package a module belongs to: ``k2rl.trainer.base`` -> ``k2rl.trainer``; top-level modules are their own."""
    return ".".join(name.split(".")[:2])


def test_the_packages_form_no_circle():
    """Module imports may not go round between packages either (trainer -> rollouts -> experts -> run -> trainer
    was one): each package sits above the ones it imports."""
    found = modules()
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        for target in imported_modules(path, name, set(found)):
            if path.name == "__init__.py" and target.startswith(name + "."):
                continue
            if package_of(target) != package_of(name):
                graph.setdefault(package_of(name), set()).add(package_of(target))
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for target in sorted(graph.get(node, ())):
            if target in path:
                pytest.fail("package circle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in done:
                visit(target, path + [target])
        done.add(node)

    for node in sorted(graph):
        visit(node, [node])


# Private TRL/PEFT names (methods k2rl overrides or calls, internal attributes, internal import paths).
PRIVATE_TRL = re.compile(
    r"\b(_generate_single_turn|_generate_and_score_completions|_get_per_token_logps_and_entropies|_calculate_rewards"
    r"|_compute_loss|_generate|_metrics|add_fused_lm_head|trl\.trainer\.utils|_tokenizer)\b"
)
PRIVATE_PEFT = re.compile(r"\b(merged_adapters|get_param|get_delta_weight|ParamWrapper|peft\.tuners|_k2rl_expert_masks)\b")


def code_lines_matching(path: Path, pattern: re.Pattern) -> set[int]:
    """Line numbers where ``pattern`` occurs in code: names, attributes, imports (not strings or comments)."""
    found = set()
    with path.open("rb") as handle:
        for token in tokenize.tokenize(handle.readline):
            if token.type == tokenize.NAME and pattern.fullmatch(token.string):
                found.add(token.start[0])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            if any(pattern.search(name) for name in names):
                found.add(node.lineno)
    return found


@pytest.mark.parametrize("pattern, door", [(PRIVATE_TRL, TRL_DOOR), (PRIVATE_PEFT, PEFT_DOOR)], ids=["trl", "peft"])
def test_private_names_live_behind_one_door(pattern, door):
    assert door.is_file(), door
    offenders = []
    for path in modules().values():
        if path == door:
            continue
        lines = path.read_text().splitlines()
        for number in sorted(code_lines_matching(path, pattern)):
            offenders.append(f"{path.relative_to(ROOT)}:{number}: {lines[number - 1].strip()}")
    assert not offenders, "\n".join(offenders)


def test_doors_name_the_version_they_were_written_against():
    for door, package in ((TRL_DOOR, "trl"), (PEFT_DOOR, "peft")):
        assert re.search(rf"WRITTEN_AGAINST = \"{package}==\d+\.\d+", door.read_text()), door


def test_no_module_is_over_the_line_limit():
    long = {str(p.relative_to(ROOT)): n for p in modules().values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
