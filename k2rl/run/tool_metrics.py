"""How a policy used its tools on the held-out set: the figures that say whether RL taught tool use.

A high accuracy alone does not say the tool is why; these do. From the greedy multi-turn completions
(lists of chat messages) and which of them were solved:

- ``call_rate``: the share of completions that call a tool at least once;
- ``calls_per_completion``: tool calls per completion;
- ``calls_per_solved``: tool calls per solved completion (0 when nothing is solved);
- ``copy_rate``: of the completions that called a tool and then answered, the share whose answer is
  the number the last tool result printed (the policy used what the tool said);
- ``failed_calls``: the share of calls whose result is an error line (the call was malformed, the
  code crashed, or the tool-call limit was hit).
"""

from __future__ import annotations

from k2rl.rewards.answer import extract_final_number


def _calls(messages: list[dict]) -> int:
    return sum(len(m.get("tool_calls") or []) for m in messages if m.get("role") == "assistant")


def _copies_last_result(messages: list[dict]) -> bool | None:
    """Whether the final answer is the last tool result's number; None when no tool answered before it."""
    results = [i for i, m in enumerate(messages) if m.get("role") == "tool"]
    if not results or not messages or messages[-1].get("role") != "assistant" or messages[-1].get("tool_calls"):
        return None
    printed = extract_final_number(messages[results[-1]].get("content") or "")
    answered = extract_final_number(messages[-1].get("content") or "")
    return printed is not None and printed == answered


def tool_use_report(completions: list, solved: list[bool]) -> dict:
    """The figures above for message-list ``completions``; ``solved[i]``: completion i has the full score."""
    conversations = [c if isinstance(c, list) else [] for c in completions]
    n = max(len(conversations), 1)
    calls = [_calls(c) for c in conversations]
    solved_calls = [k for k, s in zip(calls, solved, strict=True) if s]
    copies = [c for c in map(_copies_last_result, conversations) if c is not None]
    results = [m for c in conversations for m in c if m.get("role") == "tool"]
    return {
        "call_rate": sum(k > 0 for k in calls) / n,
        "calls_per_completion": sum(calls) / n,
        "calls_per_solved": sum(solved_calls) / len(solved_calls) if solved_calls else 0.0,
        "copy_rate": sum(copies) / len(copies) if copies else 0.0,
        "failed_calls": (sum((m.get("content") or "").startswith("error") for m in results) / len(results)
                         if results else 0.0),
    }


def tool_use_line(before: dict, after: dict) -> str | None:
    """``held-out tool use (greedy): call rate 0.02 -> 0.95; ...`` from two flat evaluation records."""
    names = (("call_rate", "call rate"), ("calls_per_solved", "calls per solved"),
             ("copy_rate", "answers copying the tool"))
    if f"tool_use/{names[0][0]}" not in after:
        return None
    parts = [f"{label} {before.get(f'tool_use/{key}', float('nan')):.3f} -> {after[f'tool_use/{key}']:.3f}"
             for key, label in names]
    return "held-out tool use (greedy): " + "; ".join(parts)


def tool_use_summary(before: dict | None, after: dict | None) -> dict | None:
    """``{"before": {...}, "after": {...}}`` of the tool-use figures in two flat records; None without tools."""
    def pick(record):
        return {k.split("/", 1)[1]: v for k, v in (record or {}).items() if k.startswith("tool_use/")}

    if not pick(after) and not pick(before):
        return None
    return {"before": pick(before), "after": pick(after)}
