"""SLL-first LaTeX parsing in the checker workers gives exactly latex2sympy's own results.

The reference runs here, in the test process, where k2rl never switches the parser's prediction mode
(so no DFA state built in SLL mode is shared with it); the SLL-first side runs in a worker process.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pool_tasks
import pytest
from latex2sympy2_extended.latex2sympy2 import normalize_latex
from math_cases import FAMILIES, random_problem
from math_verify.parser import LatexExtractionConfig

from k2rl.rewards.deadline_pool import OK, DeadlinePool

# Pieces of answers, broken answers and near-misses: shuffled together they reach the grammar's
# ambiguous corners (juxtaposition, intervals vs tuples, sets vs thousands, relations) and syntax errors.
PIECES = ["1", "23", "4.5", "-", "+", "x", "y", "i", "\\pi", "e", "=", ",", "(", ")", "[", "]", "\\{", "\\}", "^",
          "_", "{", "}", "\\frac{1}{2}", "\\sqrt{3}", "\\cdot", "\\times", "/", "\\%", "\\infty", "\\cup", "|", "!",
          "\\le", "<", "\\sin", "\\log", "\\text{ cm}", "^\\circ", "&", "\\\\", "\\begin{pmatrix}", "\\end{pmatrix}"]


def corpus(seed: int) -> list[str]:
    rng = random.Random(seed)
    answers = []
    for gold, same, different in (item for items in FAMILIES.values() for item in items):
        answers += [gold, *same, *different]
    for _ in range(30):
        gold, same, different = random_problem(rng)
        answers += [gold, *same, *different]
    answers += ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 9))) for _ in range(200)]
    config = LatexExtractionConfig().normalization_config  # the strings math-verify hands to latex2sympy
    return sorted({normalize_latex(answer, config=config) for answer in answers})


@pytest.fixture
def sll_worker(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(Path(pool_tasks.__file__).parent))
    pool = DeadlinePool(pool_tasks.latex_outcome_sll_first, workers=1, timeout_s=30.0)
    yield pool
    pool.close()


def test_sll_first_parsing_matches_latex2sympy_exactly(sll_worker):
    seed = random.randrange(10**6)
    latex = corpus(seed)
    assert len(latex) > 400
    box: dict = {}
    worker_side = threading.Thread(target=lambda: box.setdefault("ours", sll_worker.map(latex, keys=[0] * len(latex))))
    worker_side.start()
    reference = [pool_tasks.latex_outcome(text, sll_first=False) for text in latex]
    worker_side.join(300)
    ours = box["ours"]
    assert all(status == OK for status, _ in ours)
    differ = [(text, ref, got) for text, ref, (_, got) in zip(latex, reference, ours) if ref != got]
    assert differ == [], f"seed {seed}"
    errors = sum(ref.startswith("!") for ref in reference)
    assert errors > 50 and len(latex) - errors > 150  # both kinds of outcome were compared: results, errors
