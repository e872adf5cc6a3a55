"""The reward calling convention: one way a reward is called, in training, evaluation, ``k2rl rollouts``
and ``k2rl rewards check``/``audit``.

A reward is called by keyword with

- ``prompts``: one per sample, as the dataset holds it (a list of chat messages for k2rl's tasks);
- ``completions``: one per sample, in the prompt's format -- a list of chat messages
  (``[{"role": "assistant", "content": ...}]``, more messages for a tool-using completion) when the
  prompt is a conversation, else a string;
- ``completion_ids``: the completion's token ids (in evaluation and ``k2rl rollouts``, the ids of the
  decoded text re-encoded without special tokens; None in ``rewards check`` when the sample has none);
- every other dataset column, one value per sample (``answer``, ``tests``, ...), and the reward's
  ``options`` from the recipe;
- in training only, TRL's ``trainer_state``, ``log_extra`` and ``log_metric``: a reward that uses them
  must accept their absence.

It returns one float or None per sample (None: no opinion on that sample). A reward must accept
``**kwargs``, since columns come and go with the data.
"""

from __future__ import annotations

import asyncio
import inspect


def as_completions(prompts: list, texts: list) -> list:
    """Completions in their prompts' format: chat messages after a chat prompt, else the text itself."""
    return [
        [{"role": "assistant", "content": text}] if isinstance(prompt, list) and isinstance(text, str) else text
        for prompt, text in zip(prompts, texts)
    ]


def completion_token_ids(tokenizer, completions: list) -> list[list[int]]:
    """Token ids of each completion's text (assistant turns joined), without special tokens."""
    from k2rl.rewards.answer import completion_text

    return [tokenizer(completion_text(c), add_special_tokens=False)["input_ids"] for c in completions]


def call_reward(reward, prompts: list, completions: list, completion_ids: list | None, columns: dict) -> list:
    """``reward``'s scores under the convention (an async reward is run to completion)."""
    out = reward(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
    return asyncio.run(out) if inspect.isawaitable(out) else out
