"""The math checker: math-verify's verdicts, bounded in time, from any thread."""

from __future__ import annotations

import logging
import random
import threading

import pytest
from math_cases import collect, rollout_batch
from math_verify import parse, verify

from k2rl.errors import K2RLError
from k2rl.rewards import get_reward
from k2rl.rewards.math import MathChecker, delimit_gold, is_equivalent

TIMEOUT_S = 1.0  # short, so the adversarial tests stay quick; ordinary checks take milliseconds


@pytest.fixture(scope="module")
def checker():
    c = MathChecker(workers=2, timeout_s=TIMEOUT_S)
    c.check_many([("$1$", "1"), ("$2$", "2")])  # start both workers: start-up is not what these tests time
    yield c
    c.close()


@pytest.fixture(scope="module")
def patient_checker():
    """math-verify's own default timeout, so a loaded test machine cannot turn a slow check into a miss."""
    c = MathChecker(workers=2, timeout_s=5.0)
    yield c
    c.close()


def test_identical_to_math_verify_on_every_case_and_math_verify_is_mostly_right(patient_checker):
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    cases = collect()
    reference = [bool(verify(parse(delimit_gold(gold)), parse(response))) for response, gold, _, _ in cases]
    ours = patient_checker.check_many([(response, gold) for response, gold, _, _ in cases])
    right = [i for i, (case, ref) in enumerate(zip(cases, reference)) if ref == case[2]]
    assert len(cases) >= 350 and len(right) >= 0.95 * len(cases)
    disagreements = [(case[3], case[1], case[0][-60:]) for case, a, b in zip(cases, ours, reference) if a != b]
    assert disagreements == []  # every case, also where math-verify is wrong: the checker is math-verify
    families = {case[3] for case in cases}
    assert {"fraction", "interval", "set", "matrix", "percentage", "units", "thousands", "multiple_boxed"} <= families


def test_identical_to_math_verify_on_a_random_rollout_batch(patient_checker):
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    seed = random.randrange(10**6)
    batch = rollout_batch(30, 4, seed=seed)
    reference = [bool(verify(parse(gold), parse(response))) for response, gold in batch]
    assert patient_checker.check_many(batch) == reference, f"seed {seed}"


@pytest.mark.parametrize(
    "response, gold, expected",
    [
        ("Long working... so the answer is $\\boxed{\\dfrac{3}{4}}$.", "0.75", True),
        ("The answer is 1,000,000", "10^6", True),
        ("$\\boxed{(2,5]}$", "(2, 5]", True),
        ("$\\boxed{[2,5)}$", "(2, 5]", False),
        ("I do not know.", "7", False),
    ],
)
def test_is_equivalent(response, gold, expected):
    assert is_equivalent(response, gold) is expected


@pytest.mark.parametrize("gold, response", [("1,22", "1.22"), ("1,22", "The answer is $1.22$"), ("1.22", "1,22"),
                                            ("-0,5", "\\boxed{-0.5}"), ("1,22", "\\boxed{1.23}"), ("1,022", "1022")])
def test_a_decimal_comma_is_read_as_math_verify_reads_it(patient_checker, gold, response):
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    reference = bool(verify(parse(gold), parse(response)))  # plain math-verify, the gold as a dataset writes it
    assert patient_checker.check_many([(response, gold)]) == [reference]
    assert reference is not response.endswith("1.23}")  # and math-verify is right on these


def test_a_decimal_comma_gold_does_not_reopen_hedging():
    reward = get_reward("math", check_timeout_s=5.0)
    completions = ["The answer is $\\boxed{1.22}$.", "$\\boxed{5}$ or maybe $\\boxed{1.22}$", "It is 1.23 or 1.22",
                   "$\\boxed{1.22 \\lor 5}$", "The answer is 5; 1.22", "$\\boxed{1, 22}$", "The answer is 1, 22"]
    assert reward(prompts=["p"] * 7, completions=completions, answer=["1,22"] * 7) == [1.0] + [0.0] * 6


def test_gold_is_only_delimited_never_rewritten():
    assert delimit_gold("\\frac{3}{4}") == "$\\frac{3}{4}$"
    assert delimit_gold("  (2, 5] ") == "$(2, 5]$"
    assert delimit_gold("$x^2$ or \\boxed{3}") == "$x^2$ or \\boxed{3}"
    assert delimit_gold(" 1,22 ") == "1,22" and delimit_gold("-0,5") == "-0,5"  # one number: math-verify reads it bare
    assert delimit_gold("1,022") == "$1,022$" and delimit_gold("3, 4") == "$3, 4$" and delimit_gold("1,2,3") == "$1,2,3$"


_rng = random.Random(0)
_LONG = " ".join(f"step {i}: we have ${_rng.randint(1, 99)}+x$ so" for i in range(7000))[:100_000] + " \\boxed{42}"
ADVERSARIAL = {
    "power tower": ("\\boxed{9^{9^{9^{9}}}}", "1"),
    "power tower gold": ("\\boxed{1}", "9^{9^{9^{9}}}"),
    "100k-char response": (_LONG, "42"),
    "100k dollar signs": ("$" * 100_000, "1"),
    "100k nested braces": ("\\boxed{" + "{" * 50_000 + "1" + "}" * 50_000 + "}", "1"),
    "deep fractions": ("\\boxed{" + "\\frac{1}{" * 400 + "2" + "}" * 400 + "}", "1"),
    "deep radicals": ("\\boxed{" + "\\sqrt{" * 1000 + "2" + "}" * 1000 + "}", "2"),
    "huge integer": ("\\boxed{" + "9" * 20_000 + "}", "9" * 20_000),
    "huge power": ("\\boxed{10^{10^{10}}}", "10^{10^{10}}"),
    "huge factorial": ("\\boxed{100000!}", "1"),
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_input_returns_within_the_timeout_and_frees_the_worker(checker, name):
    verdict = checker.check_many([ADVERSARIAL[name]])[0]
    assert verdict in (True, False, None)  # returned at all: the parent's deadline held
    # the next, ordinary check is not stuck behind it (a fresh pair: no cache hit); a stuck worker
    # would make it time out and come back None
    assert checker.check_many([(f"so \\boxed{{\\frac{{1}}{{{len(name)}}}}}", f"1/{len(name)}")]) == [True]


def test_a_timed_out_pair_is_remembered(checker, monkeypatch):
    pair = ("\\boxed{9^{9^{9^{9}}}} again", "2")
    assert checker.check_many([pair]) == [None]
    restarts = checker.pool.restarts
    monkeypatch.setattr(checker.pool, "map", lambda *a, **k: pytest.fail("a remembered timeout ran again"))
    assert checker.check_many([pair]) == [None]
    assert checker.pool.restarts == restarts


def test_repeated_pairs_are_served_from_the_cache(checker, monkeypatch):
    pairs = [("\\boxed{12}", "12"), ("\\boxed{13}", "12")] * 3
    assert checker.check_many(pairs) == [True, False] * 3
    monkeypatch.setattr(checker.pool, "map", lambda *a, **k: pytest.fail("cache miss"))
    assert checker.check_many(pairs) == [True, False] * 3


def test_works_from_threads_concurrently(checker):
    results = {}

    def work(i):
        results[i] = checker.check_many([(f"\\boxed{{{i}/2}}", f"{i / 2}"), (f"\\boxed{{{i}}}", f"{i + 1}")])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {i: [True, False] for i in range(4)}


def test_math_reward_reads_the_configured_column_and_reports_timeouts():
    reward = get_reward("math", column="solution", check_timeout_s=TIMEOUT_S, timeout_reward=None)
    metrics = []
    out = reward(
        prompts=["p"] * 4,
        completions=["\\boxed{0.5}", [{"role": "assistant", "content": "The answer is $\\frac{1}{3}$"}],
                     "\\boxed{9^{9^{9^{9}}}}", "\\boxed{1}"],
        solution=["\\frac{1}{2}", "\\frac{1}{2}", "3", None],
        log_metric=lambda name, value: metrics.append((name, value)),
    )
    assert out == [1.0, 0.0, None, None]
    assert metrics == [("rewards/math/timeouts", 1.0)]


def test_math_reward_missing_column_is_a_user_error():
    with pytest.raises(K2RLError, match="needs the gold answer column 'answer'; the dataset has \\['solution'\\]"):
        get_reward("math")(prompts=["p"], completions=["1"], solution=["1"])
