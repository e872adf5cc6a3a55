"""The critic's prompt: one rubric, the user's request, two responses labelled A and B.

Kept short on purpose: the critic may be a small policy with a short context, and every pair costs
two prompts (both orders) per rubric. Criterion weights are shown so the critic can trade criteria
off; the rubric's own weight is applied later, when verdicts of several rubrics are combined.

Two renderings (``critic.prompt`` in a recipe):

- ``full``: an instruction (system turn), then each criterion with its weight and description.
- ``compact``: one user turn — the criteria by name and weight on one line, the request, ``A:`` and
  ``B:``. For small critics: the full rendering of the core rubric is ~300 tokens of which ~200 are
  the same boilerplate in every comparison; a 3-layer model then has to carry the two responses'
  content across a long, uninformative span to the verdict position. Compact is ~100 tokens on the
  quickstart task, most of them the responses. The verdict format itself is taught by the answer
  prefix (``Verdict:``) and the warm start's format rows, so the instruction line is not needed.
"""

from __future__ import annotations

from k2rl.errors import K2RLError
from k2rl.rewards.answer import completion_text
from k2rl.rewards.rubric.schema import Rubric

INSTRUCTIONS = "Compare responses A and B by the rubric. Reply: Verdict: A, Verdict: B or Verdict: tie."
STYLES = ("full", "compact")


def request_text(prompt) -> str:
    """The user's request: a plain prompt, or the last user message of a chat prompt."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content") or "" for m in prompt if m.get("role") == "user"]
    return users[-1] if users else ""


def rubric_text(rubric: Rubric, style: str = "full") -> str:
    """The rubric as shown to the critic: one line per criterion (full), or one line in all (compact)."""
    if style == "compact":
        return "Judge: " + ", ".join(f"{c.name} x{c.weight:g}" for c in rubric.criteria)
    lines = [f"Rubric ({rubric.kind}):"]
    for c in rubric.criteria:
        lines.append(f"- {c.name} (weight {c.weight:g}): {c.description}")
    return "\n".join(lines)


def critic_messages(prompt, response_a, response_b, rubric: Rubric, style: str = "full") -> list[dict]:
    """Chat messages asking the critic to compare ``response_a`` (shown as A) with ``response_b`` (B)."""
    if style not in STYLES:
        raise K2RLError(f"critic prompt style must be one of {', '.join(STYLES)}, got {style!r}")
    a, b = completion_text(response_a), completion_text(response_b)
    if style == "compact":
        body = f"{rubric_text(rubric, style)}\n{request_text(prompt)}\nA: {a}\nB: {b}"
        return [{"role": "user", "content": body}]
    body = f"{rubric_text(rubric)}\n\nRequest:\n{request_text(prompt)}\n\nResponse A:\n{a}\n\nResponse B:\n{b}"
    return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": body}]
