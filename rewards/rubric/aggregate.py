"""From pairwise verdicts to per-sample scores, and the critic's agreement with a verifier.

Score = weighted **net win rate**: over the decided comparisons a sample took part in, (+1 for a win,
-1 for a loss, 0 for a tie) weighted by the rubric's weight, divided by the total weight. So it lies
in [-1, 1] and 0 means "as good as its rivals".

Why a win rate and not Bradley–Terry: a group has K samples and a bounded number of pairs (often
about K/2, so each sample meets one or two rivals). Bradley–Terry's maximum-likelihood strengths are
unidentified on so few comparisons (a sample that wins all its comparisons has infinite strength) and
need a prior to exist, which then dominates the result; the win rate is exact, bounded and needs no
fitting. GRPO normalises rewards within each group anyway, so only the ordering and spread inside a
group reach the policy, which the win rate gives directly. Centring at 0 also makes an abstaining
sample (no decided comparison, reward ``None``, which TRL adds as nothing to the weighted sum) land
exactly on the neutral score instead of looking like a loss.

Position bias cancels because every pair is judged in both orders: a critic that always answers "A"
gives each sample of the pair one win and one loss, a net 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from k2rl.rewards.rubric.verdict import CriticVerdict


@dataclass(frozen=True)
class Comparison:
    """One critic call: sample ``first`` shown as A, ``second`` as B, judged on rubric ``rubric``."""

    first: int
    second: int
    rubric: int
    weight: float
    verdict: CriticVerdict

    def outcome_for(self, sample: int) -> float | None:
        """+1 win, -1 loss, 0 tie for ``sample``; None when the critic abstained."""
        choice = self.verdict.choice
        if choice is None:
            return None
        if choice == "tie":
            return 0.0
        winner = self.first if choice == "A" else self.second
        return 1.0 if sample == winner else -1.0


def net_win_rates(n_samples: int, comparisons: list[Comparison]) -> list[float | None]:
    """Per-sample weighted net win rate in [-1, 1]; None for a sample with no decided comparison."""
    totals = [0.0] * n_samples
    weights = [0.0] * n_samples
    for comparison in comparisons:
        for sample in (comparison.first, comparison.second):
            outcome = comparison.outcome_for(sample)
            if outcome is not None:
                totals[sample] += comparison.weight * outcome
                weights[sample] += comparison.weight
    return [totals[i] / weights[i] if weights[i] else None for i in range(n_samples)]


@dataclass
class Agreement:
    """How often the critic preferred the sample the verifier passed, on pairs where exactly one passed."""

    labelled: int = 0  # comparisons of a passing with a failing sample
    decided: int = 0  # of those, the critic said A or B
    agreed: int = 0  # of those, it named the passing sample

    @property
    def rate(self) -> float | None:
        """Agreement over all labelled comparisons (ties and abstentions count as not agreeing)."""
        return self.agreed / self.labelled if self.labelled else None

    @property
    def decided_rate(self) -> float | None:
        """Agreement among the comparisons where the critic picked a side."""
        return self.agreed / self.decided if self.decided else None


def agreement(comparisons: list[Comparison], passed: list[bool | None], rubrics: set[int]) -> Agreement:
    """Agreement of ``comparisons`` on the rubrics in ``rubrics`` with verifier outcomes ``passed``."""
    result = Agreement()
    for c in comparisons:
        a, b = passed[c.first], passed[c.second]
        if c.rubric not in rubrics or a is None or b is None or a == b:
            continue
        result.labelled += 1
        if c.verdict.choice in ("A", "B"):
            result.decided += 1
            result.agreed += int((c.verdict.choice == "A") == a)
    return result


def preference_labels(groups: list[list[int]], passed: list[bool | None]) -> list[tuple[int, int]]:
    """(winner, loser) for every pair within a group where exactly one sample passed the verifier."""
    labels = []
    for group in groups:
        for x, i in enumerate(group):
            for j in group[x + 1 :]:
                if passed[i] is None or passed[j] is None or passed[i] == passed[j]:
                    continue
                labels.append((i, j) if passed[i] else (j, i))
    return labels
