""""Did you mean" for misspelt names: the closest known name, when one is close enough to be a typo."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, known: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.7)
    return matches[0] if matches else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"; did you mean 'learning_rate'?"`` or ``""``."""
    match = closest(name, known)
    return f"; did you mean {match!r}?" if match else ""
