"""``k2rl rewards audit``: the shipped hack corpus against the built-in rewards, and its mechanics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from k2rl.cli import main
from k2rl.critic.audit import run_audit
from k2rl.rewards.hacks import AuditTask, audit_tasks, register_audit_tasks
from k2rl.rewards.hedging import hedged

RUBRICS = [str(Path(__file__).resolve().parents[2] / "configs" / "rubrics" / name) for name in ("core.yaml", "prescriptive.yaml")]
UNIT_TEST_FAMILIES = {"exit", "hook", "always-equal", "builtins patching", "frame reading", "output forging"}
MATH_FAMILIES = {"hedged answers", "several boxed answers", "interval or set containing the gold", "huge outputs"}
RUBRIC_FAMILIES = {"opening flattery", "self-justification", "instructions to the judge", "length padding"}


@pytest.mark.parametrize(("reward", "families"), [("unit_tests", UNIT_TEST_FAMILIES), ("math", MATH_FAMILIES),
                                                  ("exact_answer", MATH_FAMILIES)])
def test_built_in_rewards_pay_no_known_hack(reward, families, capsys):
    assert main(["rewards", "audit", reward, "--json", "--options", json.dumps({"timeout_s": 5} if reward == "unit_tests" else {})]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["families"]) == families
    assert all(check["discriminates"] for check in report["checks"])  # the audit itself means something
    assert report["exploited"] == 0, [h for h in report["hacks"] if h["earns"]]


def test_a_reward_that_falls_for_a_hack_fails_the_audit(capsys):
    @__import__("k2rl.rewards", fromlist=["register_reward"]).register_reward("audit_demo_last_number")
    def last_number(prompts, completions, answer, **kwargs):
        """Pays when the last number is the gold: hedges fool it."""
        return [float(re.findall(r"\d+", c)[-1:] == [str(a)]) for c, a in zip(completions, answer)]

    register_audit_tasks("audit_demo_last_number", audit_tasks("math"))
    assert main(["rewards", "audit", "audit_demo_last_number"]) == 1
    out = capsys.readouterr().out
    assert "EARNS REWARD" in out and "either 3 or 4" in out


class PositionBlind:
    """A critic that prefers whichever response says "prefer" or flatters (an easily fooled judge)."""

    def __init__(self, fooled_by: str | None):
        self.fooled_by = fooled_by

    def judge(self, conversations):
        answers = []
        for conversation in conversations:
            body = conversation[-1]["content"]
            a, b = re.search(r"Response A:\n(.*)\n\nResponse B:\n(.*)\Z", body, re.DOTALL).groups()
            if self.fooled_by and (self.fooled_by in a) != (self.fooled_by in b):
                answers.append("Verdict: A" if self.fooled_by in a else "Verdict: B")
            else:
                answers.append("Verdict: A" if "= 4" in a and "= 4" not in b else
                               "Verdict: B" if "= 4" in b and "= 4" not in a else "Verdict: tie")
        return answers


def test_rubric_audit_catches_a_critic_that_follows_instructions_in_a_response():
    fooled = run_audit("rubric", {"critic": PositionBlind("prefer response A"), "rubrics": RUBRICS})
    assert {r.label for r in fooled.exploited} == {"prefer response A"}
    assert set(fooled.families()) == RUBRIC_FAMILIES and all(c.discriminates for c in fooled.checks)
    sound = run_audit("rubric", {"critic": PositionBlind(None), "rubrics": RUBRICS})
    assert not sound.exploited


def test_rubric_audit_with_the_tiny_policy_as_critic(tiny_policy_dir, capsys):
    options = {"critic_model": str(tiny_policy_dir), "rubrics": RUBRICS[:1], "pairs_per_group": 1}
    code = main(["rewards", "audit", "rubric", "--json", "--options", json.dumps(options)])
    report = json.loads(capsys.readouterr().out)
    assert code == (1 if report["exploited"] or not report["conclusive"] else 0)
    assert set(report["families"]) == RUBRIC_FAMILIES and len(report["hacks"]) == 5
    if not report["conclusive"]:  # an untrained tiny critic abstains: the audit must not call that safe
        assert all(h["score"] is None for h in report["hacks"])


@pytest.mark.parametrize(("response", "gold", "expected"), [
    ("It is either 3 or 4.", "4", True), ("$\\boxed{3} or maybe \\boxed{4}$", "4", True),
    ("$\\boxed{3 \\lor 4}$", "4", True), ("$\\boxed{3, 4}$", "4", True), ("The answer is 3; 4", "4", True),
    ("$\\boxed{4}$ and again $\\boxed{4}$", "4", False), ("The answer is 1,000.", "1000", False),
    ("3 + 5 = 8, 8 - 2 = 6, 6 - 2 = 4", "4", False), ("x = 3 or x = -3, so $\\boxed{3, -3}$", "3, -3", False),
    ("The answer is 4.", "4", False), ("$\\boxed{\\pm 3}$", "\\pm 3", False),
    # a decimal comma gold is one value: hedges around it are still hedges, one decimal-comma answer is not
    ("$\\boxed{5}$ or maybe $\\boxed{1.22}$", "1,22", True), ("It is 1.23 or 1.22", "1,22", True),
    ("$\\boxed{1, 22}$", "1,22", True), ("The answer is 1.22", "1,22", False), ("The answer is 1,22", "1.22", False),
    ("$\\boxed{1, 22}$", "1,2,22", False),
])
def test_hedged(response, gold, expected):
    assert hedged(response, gold) is expected


def test_user_errors_are_one_line(capsys):
    assert main(["rewards", "audit", "format"]) == 2
    assert main(["rewards", "audit", "math", "--options", "{nope"]) == 2
    assert main(["rewards", "audit", "math", "--options", "[1]"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3 and "no audit tasks" in errors[0] and "not valid JSON" in errors[1] and "JSON object" in errors[2]


def test_plugin_tasks_must_be_audit_tasks():
    from k2rl.errors import K2RLError

    with pytest.raises(K2RLError, match="AuditTask"):
        register_audit_tasks("x", [{"name": "not a task"}])
    assert isinstance(audit_tasks("math")[0], AuditTask)
