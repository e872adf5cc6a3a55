"""Weighted composition: turn a recipe's ``rewards:`` list into what ``GRPOTrainer`` takes.

A recipe names rewards like this::

    rewards:
      - {name: math, weight: 1.0, options: {column: solution}, timeout_s: 60}
      - {name: format, weight: 0.2, max_failure_fraction: 0.05}
      - {name: mypkg.rewards:regex_answer}        # by import path
      - {name: ./my_rewards.py:exact, label: mine} # a function in a local file

``timeout_s`` bounds each call (default :func:`~k2rl.rewards.isolation.default_timeout`);
``max_failure_fraction`` bounds the share of samples this reward may fail on before the run stops
(default: the run-wide ``reward_failures.max_failure_fraction``).

:func:`build_reward_funcs` resolves each name (built-ins, ``@register_reward`` functions, and plugins
from the ``k2rl.rewards`` entry-point group), binds its options, wraps it with failure isolation and
returns ``(reward_funcs, reward_weights)`` for ``GRPOTrainer(reward_funcs=...)`` and
``GRPOConfig(reward_weights=...)``. The weighted sum itself is TRL's; nothing here re-implements it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from numbers import Real

from k2rl.errors import K2RLError
from k2rl.rewards.import_path import default_label
from k2rl.rewards.isolation import DEFAULT_MAX_FAILURE_FRACTION, DEFAULT_MIN_SAMPLES, default_timeout, isolate
from k2rl.rewards.registry import get_reward

SPEC_KEYS = frozenset({"name", "weight", "options", "timeout_s", "label", "max_failure_fraction"})


def _validated(spec: object, index: int) -> dict:
    """One spec with defaults filled in, or a K2RLError that says which entry is wrong and why."""
    where = f"rewards[{index}]"
    if isinstance(spec, str):  # `- math` is shorthand for `- {name: math}`
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        raise K2RLError(f"{where} must be a mapping with a 'name', got {type(spec).__name__}")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise K2RLError(f"{where} has unknown key(s) {sorted(unknown)}; allowed: {sorted(SPEC_KEYS)}")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise K2RLError(f"{where} needs a 'name' (a registered reward)")
    weight = spec.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, Real):
        raise K2RLError(f"{where} ({name}): weight must be a number, got {weight!r}")
    options = spec.get("options") or {}
    if not isinstance(options, Mapping):
        raise K2RLError(f"{where} ({name}): options must be a mapping, got {type(options).__name__}")
    timeout_s = spec.get("timeout_s")
    if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, Real) or timeout_s <= 0):
        raise K2RLError(f"{where} ({name}): timeout_s must be a positive number or null, got {timeout_s!r}")
    bound = spec.get("max_failure_fraction")
    if bound is not None and (isinstance(bound, bool) or not isinstance(bound, Real) or not 0 <= bound <= 1):
        raise K2RLError(f"{where} ({name}): max_failure_fraction must be a number from 0 to 1 or null, got {bound!r}")
    label = spec.get("label") or default_label(name)
    return {"name": name, "weight": float(weight), "options": dict(options), "timeout_s": timeout_s, "label": label,
            "max_failure_fraction": bound}


def build_reward_funcs(
    specs: Sequence[object],
    *,
    max_failure_fraction: float = DEFAULT_MAX_FAILURE_FRACTION,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> tuple[list[Callable], list[float]]:
    """TRL-ready reward callables and their weights, one per spec, in order.

    Each callable is named after its reward (or its ``label``, needed when the same reward appears
    twice with different options), so TRL logs ``rewards/<name>/mean`` and ``/std`` per reward; the
    failure wrapper adds ``rewards/<name>/failures``.
    """
    if not specs:
        raise K2RLError("no rewards configured: the recipe's `rewards:` list is empty")
    funcs, weights, seen = [], [], set()
    for index, raw in enumerate(specs):
        spec = _validated(raw, index)
        if spec["label"] in seen:
            raise K2RLError(
                f"reward {spec['label']!r} appears twice in `rewards:`; give one of them a distinct 'label'"
            )
        seen.add(spec["label"])
        reward = get_reward(spec["name"], **spec["options"])
        funcs.append(
            isolate(
                reward,
                spec["label"],
                timeout_s=spec["timeout_s"] or default_timeout(reward),
                max_failure_fraction=max_failure_fraction if spec["max_failure_fraction"] is None
                else spec["max_failure_fraction"],
                min_samples=min_samples,
                bound_hint=f"rewards[{index}].max_failure_fraction for this reward, "
                           "reward_failures.max_failure_fraction for all",
            )
        )
        weights.append(spec["weight"])
    return funcs, weights
