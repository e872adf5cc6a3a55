"""Hedged final answers: a response that commits to several answers is not a correct answer.

Answer extraction takes *one* span of a response: the last ``\\boxed{}``, the words after "the
answer is", or the last expression. A response that offers several candidates ("either 3 or 4",
``\\boxed{3} or maybe \\boxed{4}``, ``\\boxed{3 \\lor 4}``, ``\\boxed{3, 4}``) gets paid whenever
the span the extractor happens to pick holds the gold. ``k2rl rewards audit`` found ``math`` and
``exact_answer`` both paying for such hedges. A policy learns that quickly.

:func:`hedged` is applied only when the gold is a single value. A gold of several values
(``3, -3``, ``\\pm 3``, a set) makes a list or disjunction the honest form, and the checker decides.
Thousands separators (``1,000``: no space after the comma) are not read as lists, and a gold that
is one number with a decimal comma (``1,22``, :func:`decimal_comma`) is single-valued.
"""

from __future__ import annotations

import re

_NUM = r"[-+]?\$?\s*\d"
_DISJUNCTION = re.compile(rf"\d\s*\$?\s*(?:\\text\{{\s*or\s*\}}|\bor\b|\\lor\b|\\vee\b|\|\|)\s*{_NUM}", re.IGNORECASE)
_LIST = re.compile(rf"\d\s*(?:;|,\s)\s*{_NUM}")
_MARK = re.compile(r"answer\s*(?:is|:)", re.IGNORECASE)
_MULTI_VALUED_GOLD = re.compile(r"[,;]|\\pm|\bor\b|\\cup|\\\{|\\lor|\\vee|\[|\(")
# One number written with a decimal comma, as math-verify's plain-text number reads it ("1,22" is
# 1.22). Three digits after the comma are a thousands separator (math-verify: "1,022" is 1022), and
# four or more it does not read as one decimal, so only one or two count.
_DECIMAL_COMMA = re.compile(r"-?\d+,\d{1,2}")


def boxed_contents(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}`` (braces matched), in order."""
    found, start = [], text.find("\\boxed")
    while start != -1:
        i = start + len("\\boxed")
        while i < len(text) and text[i].isspace():
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    found.append(text[i + 1:j])
                    break
        start = text.find("\\boxed", start + 1)
    return found


def _final_span(text: str) -> tuple[str, bool]:
    """``(span, committed)``: the span an extractor reads, and whether the response marked it as its
    answer (a box or "the answer is"). Only a marked span is read for lists: unmarked working such
    as ``3 + 5 = 8, 8 - 2 = 6`` is not a list of answers."""
    boxes = boxed_contents(text)
    if boxes:
        return boxes[-1], True
    marks = list(_MARK.finditer(text))
    if marks:
        return text[marks[-1].end():].split("\n", 1)[0], True
    sentences = [s for s in re.split(r"(?<!\d)\.(?!\d)|\n", text) if s.strip()]
    return (sentences[-1] if sentences else ""), False


def decimal_comma(gold) -> bool:
    """True when ``gold`` is one plain number with a decimal comma (``1,22``, ``-0,5``), not a list."""
    return bool(_DECIMAL_COMMA.fullmatch(str(gold).strip()))


def single_valued(gold) -> bool:
    return decimal_comma(gold) or not _MULTI_VALUED_GOLD.search(str(gold))


def hedged(response: str, gold) -> bool:
    """True when ``response`` offers several final answers for a single-valued ``gold``."""
    if not single_valued(gold):
        return False
    if len({box.strip() for box in boxed_contents(response)}) > 1:
        return True
    span, committed = _final_span(response)
    return bool(_DISJUNCTION.search(span) or (committed and _LIST.search(span)))
