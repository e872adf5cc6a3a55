"""The built-in tool-use task: products of three-digit numbers, which the tiny policy cannot work out
in its head but can get exactly from the sandboxed ``python`` tool.

``What is 472 * 815?`` takes one call (``print(472 * 815)``), the answer copies what the tool printed.
A ``two_call_fraction`` of the problems have three factors, ``What is 703 * 472 * 815?``: the first
call multiplies the last two (the same call, at the same distance from the question's end, as a
two-factor problem), the second multiplies the first factor by what the first call printed, and the
answer copies the second result. Operand ranges keep every number's length fixed (factors 400-999, so
a product of two is six digits; a three-factor problem's first factor is 625-999, so its product is
nine): every copy the policy makes -- operands into a call, a result into the next call or the answer
-- is over a fixed distance, which the tiny policy learns reliably.

``demonstration`` / ``demonstration_messages`` are the warm start's data: a ``tool_fraction`` of the
rows call the tool and copy its answer, the others answer at once with the right product (which the
policy cannot compute, so it learns to guess a six- or nine-digit number). Held-out items never share
a question with training items.
"""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING

from k2rl.errors import K2RLError

if TYPE_CHECKING:
    from datasets import Dataset

ANSWER_FORMAT = "The answer is {answer}."  # what the exact_answer reward reads (the arithmetic task's format too)

FACTOR_RANGE = (400, 999)  # two of them: a six-digit product
FIRST_OF_THREE_RANGE = (625, 999)  # times a six-digit product: a nine-digit one


def tool_call(code: str, index: int) -> dict:
    """One python call as a chat message's ``tool_calls`` entry (K2 ids count calls over the conversation)."""
    return {"id": f"functions.python:{index}", "type": "function",
            "function": {"name": "python", "arguments": json.dumps({"code": code})}}


NAMES = "abc"  # the factors' names when the question binds them (named: true)


def _calls(factors: tuple[int, ...], named: bool = False) -> list[tuple[str, int]]:
    """(code, what it prints) for each call the demonstration makes: the last two factors first.

    ``named``: the code uses the factors' names and ``r0``, the first call's result, as the
    ``tool_use`` environment binds them, so no call copies a number.
    """
    names = NAMES[:len(factors)]
    *rest, b, c = factors
    steps = [(f"print({names[-2]} * {names[-1]})" if named else f"print({b} * {c})", b * c)]
    for index, a in enumerate(reversed(rest)):
        code = f"print({names[len(rest) - 1 - index]} * r{index})" if named else f"print({a} * {steps[-1][1]})"
        steps.append((code, a * steps[-1][1]))
    return steps


def tool_messages(factors: tuple[int, ...], named: bool = False) -> list[dict]:
    """The tool demonstration: each call, what the tool printed, then the answer copying the last result."""
    messages = []
    for index, (code, result) in enumerate(_calls(factors, named)):
        call = tool_call(code, index)
        messages += [{"role": "assistant", "content": "", "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": call["id"], "content": f"{result}\n"}]
    answer = ANSWER_FORMAT.format(answer=_product(factors))
    return messages + [{"role": "assistant", "content": answer}]


def _product(factors: tuple[int, ...]) -> int:
    product = 1
    for f in factors:
        product *= f
    return product


def tool_use_item(factors: tuple[int, ...], tool: bool, named: bool = False) -> dict:
    """One problem: question, ``answer``, ``calls`` (how many a tool solution makes), its demonstration and
    ``bindings`` (JSON ``{name: factor}`` when ``named``, which the ``tool_use`` environment binds in its tool)."""
    product = _product(factors)
    messages = tool_messages(factors, named) if tool else None
    names = NAMES[:len(factors)]
    question = (f"{', '.join(f'{n} = {f}' for n, f in zip(names, factors))}. What is {' * '.join(names)}?" if named
                else f"What is {' * '.join(map(str, factors))}?")
    return {
        "question": question,
        "bindings": json.dumps(dict(zip(names, factors))) if named else "",
        "answer": str(product),
        "calls": len(factors) - 1,
        "demonstration": ANSWER_FORMAT.format(answer=product),
        "demonstration_messages": json.dumps(messages) if messages else "",
    }


def _factors(rng: random.Random, three: bool) -> tuple[int, ...]:
    pair = (rng.randint(*FACTOR_RANGE), rng.randint(*FACTOR_RANGE))
    return (rng.randint(*FIRST_OF_THREE_RANGE), *pair) if three else pair


def _draw(size: int, seed: int, two_call_fraction: float, tool_fraction: float, exclude: set,
          named: bool) -> list[dict]:
    rng = random.Random(f"tool-use-{seed}")
    style_rng = random.Random(f"tool-use-style-{seed}")  # the style draw never changes which items are drawn
    rows, seen = [], set(exclude)
    while len(rows) < size:
        factors = _factors(rng, rng.random() < two_call_fraction)
        if factors in seen:
            continue
        seen.add(factors)
        rows.append({**tool_use_item(factors, tool=style_rng.random() < tool_fraction, named=named), "factors": factors})
    return rows


def tool_use_splits(train_size: int, eval_size: int, seed: int, tool_fraction: float = 0.4,
                    two_call_fraction: float = 0.25, named: bool = False) -> tuple[Dataset, Dataset]:
    """(training rows, held-out rows); held-out rows have no demonstration and share no question with training.

    ``named``: questions bind the factors to names (``a = 472, b = 815. What is a * b?``) and tool
    calls use the names, for the ``tool_use`` environment (``rollout.environment: tool_use``).
    """
    for option, value in (("tool_fraction", tool_fraction), ("two_call_fraction", two_call_fraction)):
        if not 0.0 <= value <= 1.0:
            raise K2RLError(f"tool_use task: {option} must be between 0 and 1, got {value}")
    held_out = _draw(eval_size, 2 * seed + 1, two_call_fraction, 0.0, set(), named)
    train = _draw(train_size, 2 * seed, two_call_fraction, tool_fraction, {r["factors"] for r in held_out}, named)

    from datasets import Dataset  # imported here: recipe checks read this module's options before heavy imports

    def strip(rows):
        return Dataset.from_list([{k: v for k, v in r.items() if k != "factors"} for r in rows])

    return strip(train), strip(held_out)
