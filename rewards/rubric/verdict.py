"""Reading the critic's answer: a clear verdict, or an abstention with its reason.

The critic is asked to end with ``Verdict: A``, ``Verdict: B`` or ``Verdict: tie``. Anything else is an
abstention — no verdict line, two lines that disagree, an empty answer — and abstentions are counted
and logged by the reward, never turned into a score: a guessed verdict would reward noise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CHOICES = ("A", "B", "tie")
_VERDICT = re.compile(r"verdict\s*[:=]\s*\**\s*(a|b|tie)(?![\w])", re.IGNORECASE)


@dataclass(frozen=True)
class CriticVerdict:
    """``choice`` is "A", "B", "tie", or None for an abstention (``reason`` then says why)."""

    choice: str | None
    reason: str | None = None

    @property
    def decided(self) -> bool:
        return self.choice is not None


def parse_verdict(text: str | None) -> CriticVerdict:
    """The verdict stated in ``text``; repeated identical verdicts are fine, conflicting ones abstain."""
    if text is None or not str(text).strip():
        return CriticVerdict(None, "empty answer")
    found = {m.group(1).lower() for m in _VERDICT.finditer(str(text))}
    if not found:
        return CriticVerdict(None, "no verdict")
    if len(found) > 1:
        return CriticVerdict(None, "conflicting verdicts")
    (choice,) = found
    return CriticVerdict("tie" if choice == "tie" else choice.upper())


def verdict_text(choice: str) -> str:
    """The answer a critic should give for ``choice`` (the target of critic refinement)."""
    if choice not in CHOICES:
        raise ValueError(f"unknown verdict {choice!r}")
    return f"Verdict: {choice}"
