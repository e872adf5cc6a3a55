"""Conversations the tool-using test policy learns (see conftest.py)."""

from k2rl.rollouts.tool_calls import CALL_END, SECTION_BEGIN, SECTION_END, format_call

GOOD_PROMPT = [{"role": "user", "content": "run it"}]
BAD_PROMPT = [{"role": "user", "content": "break it"}]
GOOD_CALL = SECTION_BEGIN + format_call("python", {"code": "print(6*7)"}) + SECTION_END
BAD_CALL = SECTION_BEGIN + "<|tool_call_begin|>functions.python:0<|tool_call_argument_begin|>{code: 1" + CALL_END + SECTION_END


def conversations():
    good = GOOD_PROMPT + [
        {"role": "assistant", "content": GOOD_CALL},
        {"role": "tool", "tool_call_id": "functions.python:0", "content": "42\n"},
        {"role": "assistant", "content": "The answer is 42."},
    ]
    bad = BAD_PROMPT + [
        {"role": "assistant", "content": BAD_CALL},
        {"role": "tool", "tool_call_id": "functions.python:0", "content": "error: bad JSON"},
        {"role": "assistant", "content": "The answer is 0."},
    ]
    return [good, bad]
