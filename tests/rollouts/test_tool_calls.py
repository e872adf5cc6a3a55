"""Kimi K2 tool-call parsing: well-formed calls, every kind of malformed call, and the chat template round trip."""

import pytest

from k2rl.rollouts.tool_calls import (
    ARGUMENT_BEGIN, CALL_BEGIN, CALL_END, SECTION_BEGIN, SECTION_END, format_call, parse_turn, tool_results_text,
)
from k2rl.rollouts.tools import execute
from k2rl.policy.tokenizer import build_tokenizer


def test_final_answer_has_no_calls():
    turn = parse_turn("The answer is 4.<|im_end|>")
    assert turn.content == "The answer is 4." and turn.calls == []


def test_two_calls_with_text_before():
    text = ("let me check" + SECTION_BEGIN + format_call("python", {"code": "print(1)"}, 0)
            + format_call("search", {"q": "x", "n": 2}, 1) + SECTION_END + "<|im_end|>")
    turn = parse_turn(text)
    assert turn.content == "let me check"
    assert [(c.id, c.name, c.arguments, c.error) for c in turn.calls] == [
        ("functions.python:0", "python", {"code": "print(1)"}, None),
        ("functions.search:1", "search", {"q": "x", "n": 2}, None),
    ]


@pytest.mark.parametrize("section, expected", [
    (f"{CALL_BEGIN}functions.python:0{ARGUMENT_BEGIN}{{code: 1}}{CALL_END}", "not valid JSON"),
    (f"{CALL_BEGIN}functions.python:0{ARGUMENT_BEGIN}[1, 2]{CALL_END}", "must be a JSON object"),
    (f"{CALL_BEGIN}python{ARGUMENT_BEGIN}{{}}{CALL_END}", "functions.NAME:INDEX"),
    (f"{CALL_BEGIN}functions.python:0 {{}}{CALL_END}", "no <|tool_call_argument_begin|>"),
    (f"{CALL_BEGIN}functions.python:0{ARGUMENT_BEGIN}{{}}", "not closed with <|tool_call_end|>"),
    ("just words", "unexpected text"),
    ("", "holds no call"),
])
def test_malformed_call_becomes_an_error_not_an_exception(section, expected):
    turn = parse_turn(SECTION_BEGIN + section + SECTION_END)
    assert len(turn.calls) == 1 and expected in turn.calls[0].error
    assert execute(turn.calls[0], {"python": lambda args: "ran"}).startswith("error: ")


def test_unclosed_section_and_stray_markers():
    unclosed = parse_turn(SECTION_BEGIN + format_call("python", {"code": ""}) + "<|im_end|>")
    assert "not closed with <|tool_calls_section_end|>" in unclosed.calls[0].error
    stray = parse_turn("hi" + format_call("python", {}))
    assert stray.content == "hi" and "outside" in stray.calls[0].error


def test_execute_reports_unknown_tools_and_tool_bugs():
    call = parse_turn(SECTION_BEGIN + format_call("shell", {"cmd": "ls"}) + SECTION_END).calls[0]
    assert execute(call, {"python": lambda a: ""}) == "error: unknown tool 'shell' (available: python)"

    def broken(arguments):
        raise KeyError("boom")

    assert "failed: KeyError" in execute(parse_turn(SECTION_BEGIN + format_call("python", {}) + SECTION_END).calls[0],
                                         {"python": broken})


def test_parsed_turn_renders_back_through_the_chat_template():
    tokenizer = build_tokenizer()
    text = "plan" + SECTION_BEGIN + format_call("python", {"code": "print(2)"}) + SECTION_END
    rendered = tokenizer.apply_chat_template([parse_turn(text).as_message()], tokenize=False)
    assert rendered == f"<|im_assistant|>assistant<|im_middle|>{text}<|im_end|>"
    result = tool_results_text(tokenizer, [("functions.python:0", "2\n")])
    assert result == "<|im_system|>tool<|im_middle|>## Return of functions.python:0\n2\n<|im_end|><|im_assistant|>assistant<|im_middle|>"
