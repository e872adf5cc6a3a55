"""The rubric reward's mechanics with scripted, deterministic critics (test doubles of the critic interface)."""

from __future__ import annotations

import logging
import re
from itertools import combinations
from pathlib import Path

import pytest

from k2rl.errors import K2RLError
from k2rl.rewards import get_reward
from k2rl.rewards.rubric import load_rubric, parse_rubric
from k2rl.rewards.rubric.pairs import group_indices, group_rng, sample_pairs
from k2rl.rewards.rubric.verdict import parse_verdict

RUBRICS = Path(__file__).resolve().parents[2] / "configs" / "rubrics"
CORE = parse_rubric({"kind": "core", "criteria": ["The answer is right."]}, "test", default_name="core")
STYLE = parse_rubric({"kind": "prescriptive", "weight": 3, "criteria": ["No flattery."]}, "test", default_name="style")

_SHOWN = re.compile(r"Response A:\n(.*)\n\nResponse B:\n(.*)\Z", re.DOTALL)
_RUBRIC_KIND = re.compile(r"Rubric \((\w+)\)")


def shown(conversation):
    """(rubric kind, response A, response B) as the critic sees them."""
    body = conversation[-1]["content"]
    a, b = _SHOWN.search(body).groups()
    return _RUBRIC_KIND.search(body).group(1), a, b


class ScriptedCritic:
    """Answers by a rule of (rubric kind, A, B); records every conversation it was shown."""

    def __init__(self, rule):
        self.rule, self.seen = rule, []

    def judge(self, conversations):
        self.seen.extend(conversations)
        return [self.rule(*shown(c)) for c in conversations]


def quality(text):
    return int(re.search(r"q(\d)", text).group(1))


def prefer_higher_q(kind, a, b):
    if quality(a) == quality(b):
        return "Verdict: tie"
    return "Verdict: A" if quality(a) > quality(b) else "Verdict: B"


def chat(text):
    return [{"role": "user", "content": text}]


def completions(*texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


class Metrics(dict):
    def __call__(self, name, value):
        self.setdefault(name, []).append(value)


def run(critic, prompts, comps, **options):
    metrics = Metrics()
    columns = options.pop("columns", {})
    reward = get_reward("rubric", critic=critic, **options)
    return reward(prompts=prompts, completions=comps, log_metric=metrics, **columns), metrics


# ---- verdict parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "choice", "reason"),
    [
        ("Verdict: A", "A", None),
        ("I compared both.\nverdict: b", "B", None),
        ("Verdict: tie", "tie", None),
        ("Verdict: **A**", "A", None),
        ("Verdict: A. Verdict: A", "A", None),
        ("Verdict: A\nVerdict: B", None, "conflicting verdicts"),
        ("Verdict: Absolutely B", None, "no verdict"),
        ("The answer is 12.", None, "no verdict"),
        ("", None, "empty answer"),
        (None, None, "empty answer"),
    ],
)
def test_parse_verdict(text, choice, reason):
    verdict = parse_verdict(text)
    assert (verdict.choice, verdict.reason) == (choice, reason)


# ---- order swapping and aggregation ------------------------------------------------------------


def test_every_pair_is_judged_in_both_orders_so_position_bias_cancels():
    critic = ScriptedCritic(lambda kind, a, b: "Verdict: A")  # pure position bias
    scores, metrics = run(critic, [chat("p")] * 4, completions("q1", "q2", "q3", "q4"), rubrics=[CORE], pairs_per_group=6)
    assert scores == [0.0, 0.0, 0.0, 0.0]
    orders = [(a, b) for _, a, b in map(shown, critic.seen)]
    assert sorted(orders) == sorted([(x, y) for x, y in combinations(["q1", "q2", "q3", "q4"], 2)] * 1 + [
        (y, x) for x, y in combinations(["q1", "q2", "q3", "q4"], 2)
    ])
    assert metrics["rubric/judgements"] == [12.0] and metrics["rubric/pairs"] == [6.0]


def test_net_win_rate_of_a_consistent_critic():
    critic = ScriptedCritic(prefer_higher_q)
    scores, _ = run(critic, [chat("p")] * 4, completions("q3", "q1", "q4", "q2"), rubrics=[CORE], pairs_per_group=6)
    # Each sample meets the 3 others twice: net wins / 6 comparisons.
    assert scores == pytest.approx([1 / 3, -1.0, 1.0, -1 / 3])


def test_ties_count_as_decided_and_rubric_weights_combine():
    def rule(kind, a, b):  # core: prefers higher q; style (weight 3): always a tie
        return prefer_higher_q(kind, a, b) if kind == "core" else "Verdict: tie"

    scores, _ = run(ScriptedCritic(rule), [chat("p")] * 2, completions("q2", "q1"), rubrics=[CORE, STYLE])
    # q2: core +1 twice (weight 1), style 0 twice (weight 3) -> (2*1) / (2*1 + 2*3)
    assert scores == pytest.approx([0.25, -0.25])


def test_groups_are_scored_separately():
    critic = ScriptedCritic(prefer_higher_q)
    prompts = [chat("first")] * 2 + [chat("second")] * 2
    scores, _ = run(critic, prompts, completions("q1", "q2", "q9", "q8"), rubrics=[CORE], group_size=2)
    assert scores == [-1.0, 1.0, 1.0, -1.0]
    assert all({a, b} in ({"q1", "q2"}, {"q9", "q8"}) for _, a, b in map(shown, critic.seen))


# ---- pair sampling and cost bounds -------------------------------------------------------------


def test_pairs_per_group_bounds_the_critic_calls_and_covers_every_sample():
    critic = ScriptedCritic(prefer_higher_q)
    texts = [f"q{i}" for i in range(8)]
    scores, metrics = run(critic, [chat("p")] * 16, completions(*texts, *texts), rubrics=[CORE, STYLE], group_size=8,
                          pairs_per_group=4)
    assert len(critic.seen) == 2 * 4 * 2 * 2  # groups x pairs x orders x rubrics
    assert metrics["rubric/judgements"] == [32.0]
    assert None not in scores  # 4 pairs of 8 samples: a perfect matching, everyone compared


def test_pair_sampling_is_deterministic_distinct_and_bounded():
    members = list(range(8))
    first = sample_pairs(members, 10, group_rng(0, ["x"]))
    assert first == sample_pairs(members, 10, group_rng(0, ["x"]))
    assert first != sample_pairs(members, 10, group_rng(0, ["y"]))
    assert len(first) == len(set(first)) == 10 and all(a < b for a, b in first)
    assert sample_pairs(members, 100, group_rng(0, ["x"])) == list(combinations(members, 2))
    assert sample_pairs([5], 3, group_rng(0, [])) == []


def test_grouping_by_prompt_and_by_group_size():
    prompts = [chat("a"), chat("a"), chat("b"), chat("b"), chat("b")]
    assert group_indices(prompts) == [[0, 1], [2, 3, 4]]
    with pytest.raises(K2RLError, match="mixes different prompts"):
        group_indices(prompts[:4], group_size=4)
    with pytest.raises(K2RLError, match="do not split into groups of 2"):
        group_indices(prompts, group_size=2)


# ---- abstentions -------------------------------------------------------------------------------


def test_abstentions_are_counted_logged_and_never_scored(caplog):
    def rule(kind, a, b):  # anything involving q3 is undecidable for this critic
        return "hmm, hard to say" if "q3" in (a, b) else prefer_higher_q(kind, a, b)

    with caplog.at_level(logging.INFO, logger="k2rl.rewards.rubric.reward"):
        scores, metrics = run(ScriptedCritic(rule), [chat("p")] * 3, completions("q1", "q2", "q3"), rubrics=[CORE])
    assert scores == [-1.0, 1.0, None]  # q3 never got a decided comparison: no score, not a 0
    assert metrics["rubric/abstentions"] == [4.0] and metrics["rubric/unscored"] == [1.0]
    assert "abstained on 4 of 6 comparisons (no verdict: 4)" in caplog.text


# ---- per-prompt rubrics ------------------------------------------------------------------------


def test_per_prompt_rubrics_come_from_a_dataset_column():
    critic = ScriptedCritic(prefer_higher_q)
    prompts = [chat("first")] * 2 + [chat("second")] * 2 + [chat("third")] * 2
    column = ["Mentions the unit.", "Mentions the unit.", "", "", [{"name": "short", "description": "Under ten words."}]] * 1
    column.append(column[-1])
    scores, metrics = run(critic, prompts, completions("q1", "q2", "q1", "q2", "q2", "q1"), rubrics=[CORE],
                          rubric_column="rubric", group_size=2, columns={"rubric": column})
    bodies = [c[-1]["content"] for c in critic.seen]
    first = [b for b in bodies if "first" in b]
    third = [b for b in bodies if "third" in b]
    assert len(first) == 4 and sum("Mentions the unit." in b for b in first) == 2
    assert sum("Rubric (human)" in b for b in first) == 2
    assert not any("Rubric (human)" in b for b in bodies if "second" in b)  # empty cell: shared rubrics only
    assert sum("short (weight 1): Under ten words." in b for b in third) == 2
    assert metrics["rubric/judgements"] == [4.0 + 2.0 + 4.0]
    assert scores == [-1.0, 1.0, -1.0, 1.0, 1.0, -1.0]


def test_rubric_column_alone_is_enough_and_a_missing_column_is_a_clear_error():
    critic = ScriptedCritic(prefer_higher_q)
    scores, _ = run(critic, [chat("p")] * 2, completions("q1", "q2"), rubric_column="rubric",
                    columns={"rubric": ["Be right."] * 2})
    assert scores == [-1.0, 1.0]
    with pytest.raises(K2RLError, match="rubric_column 'rubric' is not a dataset column"):
        run(critic, [chat("p")] * 2, completions("q1", "q2"), rubric_column="rubric")


# ---- verifier agreement and refinement labels --------------------------------------------------


class Refiner:
    def __init__(self):
        self.examples = []

    def add(self, examples):
        self.examples.extend(examples)


def _prefers(number):
    def rule(kind, a, b):
        has_a, has_b = f"is {number}." in a, f"is {number}." in b
        if has_a == has_b:
            return "Verdict: tie"
        return "Verdict: A" if has_a else "Verdict: B"

    return rule


@pytest.mark.parametrize(("preferred", "expected"), [("5", 1.0), ("7", 0.0)])
def test_agreement_with_the_verifier_is_measured_on_core_rubrics(preferred, expected):
    comps = completions("The answer is 5.", "The answer is 7.", "The answer is 5.", "The answer is 7.")
    refiner = Refiner()
    _, metrics = run(ScriptedCritic(_prefers(preferred)), [chat("What is 2 + 3?")] * 4, comps, rubrics=[CORE, STYLE],
                     pairs_per_group=6, verifier="exact_answer", refiner=refiner, columns={"answer": ["5"] * 4})
    # 4 of the 6 pairs mix a pass and a fail; both orders; the style rubric is not counted.
    assert metrics["critic/labelled"] == [8.0]
    assert metrics["critic/agreement"] == [expected]
    # Labels: every mixed pair, both orders, core rubric only; the target names the passing sample.
    assert len(refiner.examples) == 8
    for messages, target in refiner.examples:
        kind, a, b = shown(messages)
        assert kind == "core"
        assert target == ("Verdict: A" if "is 5." in a else "Verdict: B")


def test_ties_and_abstentions_do_not_count_as_agreement():
    comps = completions("The answer is 5.", "The answer is 7.")
    _, metrics = run(ScriptedCritic(lambda kind, a, b: "Verdict: tie"), [chat("What is 2 + 3?")] * 2, comps,
                     rubrics=[CORE], verifier="exact_answer", columns={"answer": ["5"] * 2})
    assert metrics["critic/agreement"] == [0.0] and metrics["critic/decided"] == [0.0]
    assert "critic/agreement_decided" not in metrics


def test_refinement_without_a_verifier_and_a_missing_critic_are_errors():
    with pytest.raises(K2RLError, match="needs a verifier"):
        run(ScriptedCritic(prefer_higher_q), [chat("p")] * 2, completions("q1", "q2"), rubrics=[CORE], refiner=Refiner())
    with pytest.raises(K2RLError, match="needs a critic"):
        get_reward("rubric", rubrics=[CORE])(prompts=[chat("p")] * 2, completions=completions("q1", "q2"))


# ---- rubric files ------------------------------------------------------------------------------


def test_shipped_rubrics_load_with_their_kinds():
    core, prescriptive = load_rubric(RUBRICS / "core.yaml"), load_rubric(RUBRICS / "prescriptive.yaml")
    assert (core.kind, prescriptive.kind) == ("core", "prescriptive")
    assert core.criteria and prescriptive.criteria and prescriptive.weight == 0.5


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"kind": "core", "criteria": []}, "'criteria' must be a non-empty list"),
        ({"kind": "values", "criteria": ["x"]}, "'kind' must be one of core, prescriptive, human"),
        ({"kind": "core", "criteria": ["x"], "weigth": 2}, r"unknown key\(s\) \['weigth'\]"),
        ({"kind": "core", "criteria": [{"description": "x", "weight": -1}]}, "weight must be a positive number"),
        ({"kind": "core", "criteria": [{"name": "x"}]}, "needs a non-empty 'description'"),
    ],
)
def test_rubric_schema_errors_are_one_line(raw, message, tmp_path):
    path = tmp_path / "bad.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(K2RLError, match=message) as info:
        load_rubric(path)
    assert "\n" not in str(info.value) and "bad.yaml" in str(info.value)


def test_compact_prompt_shows_the_criteria_request_and_both_responses_in_one_turn():
    from k2rl.rewards.rubric.prompt import critic_messages

    core = load_rubric(RUBRICS / "core.yaml")
    full = critic_messages(chat("What is 2 + 3?"), "2 + 3 = 5. The answer is 5.", "The answer is 7.", core)
    compact = critic_messages(chat("What is 2 + 3?"), "2 + 3 = 5. The answer is 5.", "The answer is 7.", core, "compact")
    assert [m["role"] for m in compact] == ["user"]
    assert compact[0]["content"] == (
        "Judge: correct x3, clear x1, grounded x1\nWhat is 2 + 3?\nA: 2 + 3 = 5. The answer is 5.\nB: The answer is 7."
    )
    assert len(compact[0]["content"]) < len(full[-1]["content"]) / 2
    with pytest.raises(K2RLError, match="prompt style must be one of full, compact"):
        critic_messages(chat("p"), "a", "b", core, "terse")


def test_prompt_style_reaches_the_critic_and_the_refinement_labels():
    class Compact:
        def __init__(self):
            self.seen = []

        def judge(self, conversations):
            self.seen.extend(conversations)
            return ["Verdict: A" for _ in conversations]

    critic, refiner = Compact(), Refiner()
    run(critic, [chat("What is 2 + 3?")] * 2, completions("The answer is 5.", "The answer is 7."), rubrics=[CORE],
        verifier="exact_answer", refiner=refiner, prompt_style="compact", columns={"answer": ["5"] * 2})
    bodies = [c[-1]["content"] for c in critic.seen] + [m[-1]["content"] for m, _ in refiner.examples]
    assert len(bodies) == 4 and all(b.startswith("Judge: ") and "\nA: " in b for b in bodies)
