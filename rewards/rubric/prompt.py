"""The critic's prompt: one rubric, the user's request, two responses labelled A and B.

Kept short on purpose: the critic may be a small policy with a short context, and every pair costs
two prompts (both orders) per rubric. Criterion weights are shown so the critic can trade criteria
off; the rubric's own weight is applied later, when verdicts of several rubrics are combined.
"""

from __future__ import annotations

from k2rl.rewards.answer import completion_text
from k2rl.rewards.rubric.schema import Rubric

INSTRUCTIONS = "Compare responses A and B by the rubric. Reply: Verdict: A, Verdict: B or Verdict: tie."


def request_text(prompt) -> str:
    """The user's request: a plain prompt, or the last user message of a chat prompt."""
    if isinstance(prompt, str):
        return prompt
    users = [m.get("content") or "" for m in prompt if m.get("role") == "user"]
    return users[-1] if users else ""


def rubric_text(rubric: Rubric) -> str:
    lines = [f"Rubric ({rubric.kind}):"]
    for c in rubric.criteria:
        lines.append(f"- {c.name} (weight {c.weight:g}): {c.description}")
    return "\n".join(lines)


def critic_messages(prompt, response_a, response_b, rubric: Rubric) -> list[dict]:
    """Chat messages asking the critic to compare ``response_a`` (shown as A) with ``response_b`` (B)."""
    body = (
        f"{rubric_text(rubric)}\n\nRequest:\n{request_text(prompt)}\n\n"
        f"Response A:\n{completion_text(response_a)}\n\nResponse B:\n{completion_text(response_b)}"
    )
    return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": body}]
