"""Format reward: is the answer stated in the form the recipe asks for?

Correctness rewards (``math``, ``exact_answer``) only pay when the checker can find an answer; a small
format reward teaches the policy to state one where the checker looks, early in training when
correct answers are still rare. This checks presence and shape only, never correctness.
"""

from __future__ import annotations

import re

from k2rl.errors import K2RLError
from k2rl.rewards.answer import completion_text
from k2rl.rewards.registry import register_reward

# Named forms a recipe can ask for with `style:`; a custom `pattern:` regex overrides them.
STYLES = {
    "answer_is": re.compile(r"(?:final\s+)?answer\s*(?:is|:)\s*\S", re.IGNORECASE),
    "answer_tag": re.compile(r"<answer>\s*\S.*?</answer>", re.DOTALL),
    "think_answer": re.compile(r"^\s*<think>.*?</think>\s*<answer>\s*\S.*?</answer>\s*$", re.DOTALL),
}


def has_boxed(text: str) -> bool:
    """True when the text has a ``\\boxed{…}`` whose braces close and whose content is not empty."""
    start = text.rfind("\\boxed")
    while start != -1:
        i = start + len("\\boxed")
        while i < len(text) and text[i].isspace():
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    break
            if depth == 0 and text[i + 1 : j].strip():
                return True
        start = text.rfind("\\boxed", 0, start)
    return False


def format_matcher(style: str = "boxed", pattern: str | None = None):
    """A predicate ``text -> bool`` for a named style or a custom regex (searched, DOTALL)."""
    if pattern is not None:
        try:
            compiled = re.compile(pattern, re.DOTALL)
        except re.error as exc:
            raise K2RLError(f"reward 'format': invalid pattern {pattern!r}: {exc}") from exc
        return lambda text: compiled.search(text) is not None
    if style == "boxed":
        return has_boxed
    if style in STYLES:
        return lambda text: STYLES[style].search(text) is not None
    raise K2RLError(f"reward 'format': unknown style {style!r} (styles: boxed, {', '.join(STYLES)}; or set pattern)")


@register_reward("format")
def format_reward(prompts, completions, style: str = "boxed", pattern: str | None = None, **kwargs) -> list[float]:
    """1.0 where the completion states an answer in the expected form (boxed, "answer is", tags, regex)."""
    matches = format_matcher(style, pattern)
    return [float(matches(completion_text(c))) for c in completions]
