"""Kimi K2's tool-call format: parse what the policy wrote, render what the tool answered.

An assistant turn that calls tools ends with a section like::

    <|tool_calls_section_begin|><|tool_call_begin|>functions.python:0<|tool_call_argument_begin|>
    {"code": "print(1)"}<|tool_call_end|><|tool_calls_section_end|><|im_end|>

(one ``<|tool_call_begin|>…<|tool_call_end|>`` per call, ids ``functions.NAME:INDEX``). This is the
layout the chat template in :mod:`k2rl.policy.tokenizer` renders for an assistant message with
``tool_calls``, so a parsed turn rendered back through the template gives the same text.

A policy under training writes broken calls all the time. A broken call is not an exception here:
it becomes a :class:`ToolCall` with an ``error``, which the engine sends back to the policy as the
tool's answer (so the policy can learn what a good call looks like) instead of stopping the run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

SECTION_BEGIN = "<|tool_calls_section_begin|>"
SECTION_END = "<|tool_calls_section_end|>"
CALL_BEGIN = "<|tool_call_begin|>"
ARGUMENT_BEGIN = "<|tool_call_argument_begin|>"
CALL_END = "<|tool_call_end|>"
TURN_END = "<|im_end|>"

_CALL_ID = re.compile(r"functions\.([A-Za-z_][\w-]*):(\d+)")


@dataclass(frozen=True)
class ToolCall:
    """One call as the policy wrote it. ``error`` is set when it cannot be executed as written."""

    id: str
    name: str | None
    arguments: dict | None
    error: str | None = None


@dataclass(frozen=True)
class ParsedTurn:
    """An assistant turn split into its text and its tool calls (empty when it is a final answer)."""

    content: str
    calls: list[ToolCall] = field(default_factory=list)

    def as_message(self) -> dict:
        """The turn as a chat message, in the shape the chat template renders."""
        message: dict = {"role": "assistant", "content": self.content}
        if self.calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name or "", "arguments": c.arguments if c.arguments is not None else {}}}
                for c in self.calls
            ]
        return message


def _parse_call(body: str, index: int) -> ToolCall:
    fallback_id = f"functions.invalid:{index}"
    if ARGUMENT_BEGIN not in body:
        return ToolCall(fallback_id, None, None, f"tool call {index} has no {ARGUMENT_BEGIN} marker")
    raw_id, raw_args = body.split(ARGUMENT_BEGIN, 1)
    raw_id = raw_id.strip()
    match = _CALL_ID.fullmatch(raw_id)
    if not match:
        return ToolCall(fallback_id, None, None,
                        f"tool call id {raw_id[:60]!r} is not of the form functions.NAME:INDEX")
    name = match.group(1)
    try:
        arguments = json.loads(raw_args)
    except json.JSONDecodeError as exc:
        return ToolCall(raw_id, name, None, f"arguments of {raw_id} are not valid JSON ({exc.msg} at char {exc.pos})")
    if not isinstance(arguments, dict):
        return ToolCall(raw_id, name, None, f"arguments of {raw_id} must be a JSON object, got {type(arguments).__name__}")
    return ToolCall(raw_id, name, arguments)


def parse_turn(text: str) -> ParsedTurn:
    """Split one assistant turn (decoded *with* special tokens) into content and tool calls."""
    text = text.split(TURN_END, 1)[0]
    if SECTION_BEGIN not in text:
        stray = next((m for m in (CALL_BEGIN, SECTION_END) if m in text), None)
        if stray is None:
            return ParsedTurn(text)
        content = text.split(stray, 1)[0]
        return ParsedTurn(content, [ToolCall("functions.invalid:0", None, None,
                                             f"{stray} outside a {SECTION_BEGIN} section")])
    content, section = text.split(SECTION_BEGIN, 1)
    if SECTION_END not in section:
        return ParsedTurn(content, [ToolCall("functions.invalid:0", None, None,
                                             f"the tool-call section is not closed with {SECTION_END}")])
    section = section.split(SECTION_END, 1)[0]
    calls: list[ToolCall] = []
    rest = section
    while rest.strip():
        before, sep, after = rest.partition(CALL_BEGIN)
        if before.strip() or not sep:
            calls.append(ToolCall(f"functions.invalid:{len(calls)}", None, None,
                                  f"unexpected text {rest.strip()[:40]!r} in the tool-call section"))
            break
        body, end, rest = after.partition(CALL_END)
        if not end:
            calls.append(ToolCall(f"functions.invalid:{len(calls)}", None, None,
                                  f"tool call {len(calls)} is not closed with {CALL_END}"))
            break
        calls.append(_parse_call(body, len(calls)))
    if not calls:
        calls.append(ToolCall("functions.invalid:0", None, None, "the tool-call section holds no call"))
    return ParsedTurn(content, calls)


def format_call(name: str, arguments: dict, index: int = 0) -> str:
    """One call's text, exactly as the chat template renders it (for prompts, SFT data and tests)."""
    return f"{CALL_BEGIN}functions.{name}:{index}{ARGUMENT_BEGIN}{json.dumps(arguments)}{CALL_END}"


def tool_results_text(tokenizer, results: list[tuple[str, str]]) -> str:
    """Tool answers ``[(call_id, content)]`` and the next assistant header, rendered by the chat template.

    Rendering through the tokenizer's template (rather than hard-coding markers) keeps the engine
    consistent with whatever template the checkpoint ships.
    """
    messages = [{"role": "tool", "tool_call_id": call_id, "content": content} for call_id, content in results]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
