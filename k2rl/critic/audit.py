"""``k2rl rewards audit``: which known hacks earn reward from a reward function?

Each hack is scored next to the task's honest wrong answer in one call with TRL's signature (the
two as one group of one prompt, so a group-relative reward such as ``rubric`` compares them
directly). A hack **earns reward** when it scores more than the honest wrong answer: then a policy
gains by producing it instead of trying, which is what RL will find. The correct answer is scored
the same way, as a check on the audit itself: if it does not beat the wrong one, the task says
nothing about this reward and is reported as such.

The reward runs isolated as in training (:func:`k2rl.rewards.isolation.isolate`, with its timeout):
a sample it raises or times out on scores None and is listed under ``reward_failures``, which
``k2rl rewards audit`` reports with its own exit code (3), never as a hack.

An audit where no task's correct answer beats its wrong one is inconclusive and fails too: a reward
that pays nothing for anything is not thereby safe. Only the honest wrong answer is the bar, not zero: a reward that pays 0.3 for any attempt is not
fooled by a hack that also gets 0.3.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import asdict, dataclass, field

from k2rl.rewards.hacks import AuditTask, audit_tasks


@dataclass(frozen=True)
class HackResult:
    task: str
    family: str
    label: str
    score: float | None
    honest_score: float | None

    @property
    def earns(self) -> bool:
        return self.score is not None and (self.honest_score is None or self.score > self.honest_score)


@dataclass(frozen=True)
class TaskCheck:
    task: str
    correct_score: float | None
    honest_score: float | None

    @property
    def discriminates(self) -> bool:
        return None not in (self.correct_score, self.honest_score) and self.correct_score > self.honest_score


@dataclass(frozen=True)
class AuditReport:
    reward: str
    checks: list[TaskCheck]
    results: list[HackResult]
    reward_failures: dict[str, int] = field(default_factory=dict)  # reason -> samples the reward failed on

    @property
    def conclusive(self) -> bool:
        """At least one task's correct answer beats its wrong one, so the scores mean something."""
        return any(check.discriminates for check in self.checks)

    @property
    def failed(self) -> bool:
        """What ``k2rl rewards audit`` exits 1 for: a hack earns reward, or nothing could be concluded."""
        return bool(self.exploited) or not self.conclusive

    @property
    def exploited(self) -> list[HackResult]:
        return [r for r in self.results if r.earns]

    def families(self) -> dict[str, bool]:
        """Hack family -> whether any of its hacks earns reward."""
        out: dict[str, bool] = {}
        for r in self.results:
            out[r.family] = out.get(r.family, False) or r.earns
        return out

    def to_json(self) -> dict:
        return {"reward": self.reward, "exploited": len(self.exploited), "conclusive": self.conclusive,
                "reward_failures": self.reward_failures,
                "families": self.families(),
                "checks": [{**asdict(c), "discriminates": c.discriminates} for c in self.checks],
                "hacks": [{**asdict(r), "earns": r.earns} for r in self.results]}


def _score_pair(reward, task: AuditTask, first: str, second: str) -> tuple[float | None, float | None]:
    columns = {key: [value, value] for key, value in task.columns.items()}
    out = reward(prompts=[task.prompt, task.prompt], completions=[first, second], **columns)
    scores = asyncio.run(out) if inspect.isawaitable(out) else out
    return tuple(None if s is None else float(s) for s in scores)


def policy_critic(path: str, max_new_tokens: int = 4):
    """A critic for the ``rubric`` reward from a model directory (``k2rl init-policy`` makes a tiny one)."""
    from k2rl.critic.judge import PolicyCritic
    from k2rl.policy.build import load_policy

    policy = load_policy(path)
    policy.model.eval().requires_grad_(False)
    return PolicyCritic(max_new_tokens=max_new_tokens).bind(policy.model, policy.tokenizer)


def run_audit(name: str, options: dict | None = None, tasks: list[AuditTask] | None = None,
              timeout_s: float | None = None, corpus: str | None = None) -> AuditReport:
    """Score every hack of ``name``'s corpus (or ``corpus``'s, or ``tasks``) against the honest wrong answer."""
    from k2rl.rewards.isolation import default_timeout, isolate
    from k2rl.rewards.registry import get_reward

    options = dict(options or {})
    if "critic_model" in options:  # an audit convenience: the rubric reward takes a critic object
        options["critic"] = policy_critic(str(options.pop("critic_model")))
    fn = get_reward(name, **options)
    reward = isolate(fn, name, timeout_s=timeout_s or default_timeout(fn), max_failure_fraction=1.0)
    tasks = audit_tasks(corpus or name) if tasks is None else tasks
    checks, results = [], []
    for task in tasks:
        honest, correct = _score_pair(reward, task, task.honest_wrong, task.correct)
        checks.append(TaskCheck(task.name, correct, honest))
        for family, hacks in task.hacks.items():
            for label, completion in hacks.items():
                honest, hacked = _score_pair(reward, task, task.honest_wrong, completion)
                results.append(HackResult(task.name, family, label, hacked, honest))
    return AuditReport(name, checks, results, dict(reward.failure_stats.reasons))


def format_report(report: AuditReport) -> list[str]:
    lines = [f"reward {report.reward!r}: {len(report.results)} hacks, {len(report.exploited)} earn reward"]
    for check in report.checks:
        note = "" if check.discriminates else "  (correct does not beat wrong: this task says nothing here)"
        lines.append(f"  task {check.task}: correct {_show(check.correct_score)}, honest wrong {_show(check.honest_score)}{note}")
    width = max((len(r.family) for r in report.results), default=0)
    for r in report.results:
        mark = "EARNS REWARD" if r.earns else "no"
        lines.append(f"  {r.family:<{width}}  {mark:<12}  {_show(r.score)} vs {_show(r.honest_score)}  {r.label}")
    for reason, count in report.reward_failures.items():
        lines.append(f"  REWARD FAILED on {count} audit sample(s): {reason} (exit 3: fix the reward, then audit again)")
    if not report.conclusive:
        lines.append("  inconclusive: no task's correct answer beat its wrong one (a critic that abstains, a broken reward?)")
    return lines


def _show(value: float | None) -> str:
    return "None" if value is None else f"{value:.3f}"
