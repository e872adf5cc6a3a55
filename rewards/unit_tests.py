"""Unit-test reward: run the completion's code against the sample's tests in a sandbox.

Recipe options (bound as keyword arguments): ``mode`` (``"pass_fraction"``: share of top-level
asserts / ``check(...)`` calls that passed; ``"all_or_nothing"``: 1.0 only if every one did),
``backend`` (``"local"``, ``"docker"`` or ``"remote"``), ``timeout_s``, ``workers`` (local and docker),
``endpoints`` (remote: ``["http://HOST:PORT", ...]``, else ``$K2RL_SANDBOX_ENDPOINTS``; the token is
never a recipe option, it comes from ``$K2RL_SANDBOX_TOKEN`` or ``$K2RL_SANDBOX_TOKEN_FILE``).
Dataset columns: ``tests``
(Python source, a list of assert strings, or ``{"inputs": [...], "outputs": [...]}`` for
stdin/stdout tasks) and optionally ``entry_point`` (appended as ``check(<entry_point>)`` when the
tests define ``check`` without calling it, as HumanEval's ``test`` field does).

A verdict the sandbox could not reach because *it* failed (not the program) becomes ``None``: TRL
skips it instead of teaching the policy that correct code scores 0.
"""

from __future__ import annotations

import ast
import logging
import re

from k2rl.errors import K2RLError
from k2rl.rewards.answer import completion_text
from k2rl.rewards.registry import register_reward

log = logging.getLogger(__name__)
MODES = ("pass_fraction", "all_or_nothing")
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str:
    """The last fenced ``python``/``py`` block, else the last unlabelled fenced block, else the text."""
    blocks = _FENCE.findall(text)
    python = [body for lang, body in blocks if lang.lower() in ("python", "py", "python3")]
    if python:
        return python[-1]
    plain = [body for lang, body in blocks if not lang]
    return plain[-1] if plain else text


def _sandbox(backend: str, workers: int | None, endpoints=None):
    """The reward's sandbox for these settings, shared by its calls until ``k2rl.resources.close_all()``."""
    from k2rl.sandboxes import shared_sandbox

    if endpoints is not None and backend != "remote":
        raise K2RLError(f"unit_tests: endpoints are for backend remote, not {backend!r}")
    endpoints = [endpoints] if isinstance(endpoints, str) else endpoints
    options = {"endpoints": list(endpoints)} if endpoints else {}
    return shared_sandbox((__name__, backend, workers, tuple(endpoints or ())), backend, workers, **options)


def _with_entry_point(tests: str, entry_point: str | None) -> str:
    if not entry_point:
        return tests
    try:
        tree = ast.parse(tests)
    except SyntaxError:
        return tests
    defines = any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body)
    calls = any(isinstance(n, ast.Expr) and isinstance(n.value, ast.Call) and getattr(n.value.func, "id", None) == "check"
                for n in tree.body)
    return f"{tests}\n\ncheck({entry_point})\n" if defines and not calls else tests


def _as_io_cases(tests) -> list[tuple[str, str]] | None:
    if isinstance(tests, dict) and "inputs" in tests and "outputs" in tests:
        return [(str(i), str(o)) for i, o in zip(tests["inputs"], tests["outputs"], strict=True)]
    return None


@register_reward("unit_tests")
def unit_tests_reward(prompts, completions, completion_ids=None, *, tests=None, entry_point=None,
                      mode: str = "pass_fraction", backend: str = "local", timeout_s: float = 10.0,
                      workers: int | None = None, endpoints: list[str] | None = None,
                      **columns) -> list[float | None]:
    """Score each completion by the share (or all) of its sample's tests that pass in the sandbox."""
    if tests is None:
        raise K2RLError("the unit_tests reward needs a 'tests' column in the dataset")
    if mode not in MODES:
        raise K2RLError(f"unit_tests mode must be one of {', '.join(MODES)}, got {mode!r}")
    if len(tests) != len(completions):
        raise K2RLError(f"the tests column has {len(tests)} rows for {len(completions)} completions")
    entry_points = entry_point if isinstance(entry_point, (list, tuple)) else [entry_point] * len(completions)
    programs = [extract_code(completion_text(c)) for c in completions]
    sandbox = _sandbox(backend, workers, endpoints)

    unit_jobs, io_jobs = [], []  # (row, program, tests) / (row, case index, program, cases)
    for row, (program, sample_tests, entry) in enumerate(zip(programs, tests, entry_points)):
        io_cases = _as_io_cases(sample_tests)
        if io_cases is not None:
            groups = [[case] for case in io_cases] if mode == "pass_fraction" else [io_cases]
            io_jobs += [(row, program, group) for group in groups]
        elif isinstance(sample_tests, (list, tuple)):
            unit_jobs.append((row, program, "\n".join(str(t) for t in sample_tests)))
        else:
            unit_jobs.append((row, program, _with_entry_point(str(sample_tests), entry)))

    verdicts = sandbox.run_tests_many([(p, t) for _, p, t in unit_jobs], timeout_s=timeout_s)
    io_verdicts = sandbox.run_io_many([(p, cases) for _, p, cases in io_jobs], timeout_s=timeout_s)

    scores: list[list] = [[] for _ in completions]
    for (row, _, _), verdict in zip(unit_jobs, verdicts):
        scores[row].append(verdict)
    for (row, _, _), verdict in zip(io_jobs, io_verdicts):
        scores[row].append(verdict)

    rewards: list[float | None] = []
    for row, row_verdicts in enumerate(scores):
        broken = [v for v in row_verdicts if v.infrastructure_failure]
        if broken:
            log.warning("unit_tests: sandbox failure on sample %d (%s); reward None", row, broken[0].detail)
            rewards.append(None)
        elif mode == "all_or_nothing":
            rewards.append(float(all(v.passed for v in row_verdicts)))
        elif len(row_verdicts) == 1:
            verdict = row_verdicts[0]
            rewards.append(verdict.cases_passed / verdict.cases_total)
        else:  # stdin/stdout cases, one verdict each
            rewards.append(sum(v.passed for v in row_verdicts) / len(row_verdicts))
    return rewards


unit_tests_reward.bounds_own_time = True  # per-sample limits of its own: no outer default timeout (rewards/isolation.py)
