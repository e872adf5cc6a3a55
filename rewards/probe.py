"""A diagnostic reward for checking wiring, not for training: its value says which prompt it scored.

``prompt_probe`` pays ``code(prompt) + 0.01 * (len(completion) % 3)``, where ``code`` is one of
0.0, 0.1, ..., 0.9 fixed by a digest of the prompt. Whoever reads a reward next to a row can then tell
whether that reward was computed for that row's prompt (the tenths) while groups still have spread
(the hundredths). It reports ``probe/rows`` through ``log_metric``, so a run's metrics show whether a
reward's own metrics reach the log. The feature matrix (:mod:`k2rl.compat`) runs every row with it.
"""

from __future__ import annotations

import hashlib

from k2rl.rewards.answer import completion_text
from k2rl.rewards.registry import register_reward

NAME = "prompt_probe"


def prompt_code(prompt) -> float:
    """The tenths of the probe's reward: a digest of the prompt (text, or its chat messages)."""
    return int(hashlib.sha1(repr(prompt).encode()).hexdigest(), 16) % 10 / 10


@register_reward(NAME)
def prompt_probe(prompts, completions, **kwargs) -> list[float]:
    """See the module docstring."""
    log_metric = kwargs.get("log_metric")
    if callable(log_metric):
        log_metric("probe/rows", float(len(completions)))
    return [prompt_code(p) + 0.01 * (len(completion_text(c)) % 3) for p, c in zip(prompts, completions, strict=True)]
