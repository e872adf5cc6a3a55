"""``k2rl rewards``: the reward author's commands.

``list`` shows every reward a recipe can name (built-ins and entry-point plugins). ``check`` runs one
reward over a JSONL file of samples exactly as training would — same option binding, same failure
isolation — one sample per call, so each score comes with its own timing and failure reason before
any GPU time is spent. ``audit`` runs a corpus of known reward hacks against one (:mod:`k2rl.critic.audit`: it judges with the critic),
under the same isolation and timeout.

Both take a reward's options the same way: ``--option KEY=VALUE`` (repeatable; the value is read as
YAML, as in a recipe: ``raise_on=37`` is the integer 37, ``raise_on='37'`` the string) and/or
``--options JSON``; a name may be an import path (``./my_rewards.py:fn``). Exit codes:
0 all well; 1 (``audit``) a hack earns reward or the audit is inconclusive; 2 a usage or input
error; 3 the reward failed (raised, timed out, returned a non-number) on some sample.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import statistics
import time
from pathlib import Path

import yaml

from k2rl.errors import K2RLError
from k2rl.jsonl import json_object, json_objects

EXIT_HACK = 1  # audit: a hack earns reward, or nothing could be concluded
EXIT_REWARD_FAILED = 3  # check and audit: the reward raised, timed out or returned garbage on some sample


def _option_arguments(parser) -> None:
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="reward option (value read as YAML)"
    )
    parser.add_argument("--options", default=None, metavar="JSON",
                        help='reward options as one JSON object (rubric audit: add "critic_model": MODEL_DIR)')
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds allowed per call (as a reward's timeout_s; default the training default)")


def add_commands(subparsers) -> None:
    rewards = subparsers.add_parser("rewards", help="list and try out reward functions")
    commands = rewards.add_subparsers(dest="rewards_command", metavar="COMMAND", required=True)

    listing = commands.add_parser("list", help="rewards available to recipes (built-in and plugins)")
    listing.set_defaults(func=list_command)

    check = commands.add_parser("check", help="score a JSONL file of samples with one reward")
    check.add_argument("name", help="reward name or import path, as in a recipe's `rewards:` list")
    check.add_argument("--samples", required=True, type=Path, help="JSONL: prompt, completion and dataset columns")
    _option_arguments(check)
    check.set_defaults(func=check_command)

    audit = commands.add_parser("audit", help="run known reward hacks against a reward; exit 1 if any earns reward, "
                                              "3 if the reward fails on some sample")
    audit.add_argument("name", help="reward name or import path, as in a recipe's `rewards:` list")
    _option_arguments(audit)
    audit.add_argument("--corpus", default=None, metavar="REWARD",
                       help="audit with the hacks of another reward's corpus (e.g. math for an import-path reward)")
    audit.add_argument("--json", action="store_true", help="print the report as JSON")
    audit.set_defaults(func=audit_command)


def _summary_line(fn) -> str:
    doc = (getattr(fn, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else "(no docstring)"


def _source(name: str, fn) -> str:
    from k2rl.rewards.plugins import plugin_sources

    sources = plugin_sources()
    if name in sources:
        return f"plugin: {sources[name]}"
    module = getattr(fn, "__module__", "") or ""
    if module.startswith("k2rl.rewards"):
        return "built-in"
    return module


def list_command(args) -> int:
    from k2rl.rewards.registry import available_rewards, reward_options

    rewards = available_rewards()
    width = max(map(len, rewards), default=0)
    for name in sorted(rewards):
        fn = rewards[name]
        print(f"{name:<{width}}  {_summary_line(fn)}  [{_source(name, fn)}]")
        options = reward_options(fn)
        if options:
            print(f"{'':<{width}}  options: {', '.join(options)}")
    return 0


def parse_options(pairs: list[str], as_json: str | None = None) -> dict:
    """``["budget=512", "unit=chars"]`` -> ``{"budget": 512, "unit": "chars"}``, over ``as_json`` (a JSON object)."""
    options = {} if as_json is None else json_object(as_json, "--options")
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise K2RLError(f"--option must look like key=value, got {pair!r}")
        options[key.strip()] = yaml.safe_load(value) if value else ""
    return options


def read_samples(path: Path) -> list[tuple[int, dict]]:
    """``(line number, sample)`` for each sample in ``path``; a bad line is a K2RLError naming it."""
    samples = []
    for number, sample in json_objects(path, "samples file"):
        missing = [key for key in ("prompt", "completion") if key not in sample]
        if missing:
            raise K2RLError(f"{path} line {number}: missing {' and '.join(repr(k) for k in missing)}")
        samples.append((number, sample))
    if not samples:
        raise K2RLError(f"{path} has no samples")
    return samples


def _call_kwargs(sample: dict) -> dict:
    columns = {k: [v] for k, v in sample.items() if k not in ("prompt", "completion", "completion_ids")}
    ids = sample.get("completion_ids")
    return {
        "prompts": [sample["prompt"]],
        "completions": [sample["completion"]],
        "completion_ids": [ids] if ids is not None else None,
        **columns,
    }


def check_command(args) -> int:
    from k2rl.rewards.isolation import default_timeout, isolate
    from k2rl.rewards.registry import get_reward

    samples = read_samples(args.samples)
    fn = get_reward(args.name, **parse_options(args.option, args.options))
    reward = isolate(
        fn,
        args.name,
        timeout_s=args.timeout or default_timeout(fn),
        max_failure_fraction=1.0,  # report every failure here rather than stopping at the first few
    )
    scores, timings, failures = [], [], {}
    print(f"reward {args.name!r} on {len(samples)} samples from {args.samples}")
    for number, sample in samples:
        start = time.perf_counter()
        output = reward(**_call_kwargs(sample))
        value = (asyncio.run(output) if inspect.isawaitable(output) else output)[0]
        elapsed = time.perf_counter() - start
        timings.append(elapsed)
        reason = reward.failure_stats.last_reason
        if reason:
            failures[number] = reason
            print(f"  line {number:<5} FAILED  {elapsed * 1000:8.1f} ms  {reason}")
        else:
            scores.append(value)
            shown = "None (abstained)" if value is None else f"{value:.4f}"
            print(f"  line {number:<5} {shown:>8}  {elapsed * 1000:8.1f} ms")
    numbers = [s for s in scores if s is not None]
    print("summary:")
    print(f"  samples   {len(samples)} ({len(numbers)} scored, {len(scores) - len(numbers)} abstained, "
          f"{len(failures)} failed)")
    if numbers:
        spread = statistics.pstdev(numbers) if len(numbers) > 1 else 0.0
        print(f"  score     mean {statistics.fmean(numbers):.4f}  std {spread:.4f}  "
              f"min {min(numbers):.4f}  max {max(numbers):.4f}")
    print(f"  time      total {sum(timings):.3f} s  mean {statistics.fmean(timings) * 1000:.1f} ms  "
          f"max {max(timings) * 1000:.1f} ms (first call includes start-up)")
    if failures:
        by_reason: dict[str, int] = {}
        for reason in failures.values():
            by_reason[reason] = by_reason.get(reason, 0) + 1
        for reason, count in sorted(by_reason.items(), key=lambda item: -item[1]):
            print(f"  failures  {count} x {reason}")
    return EXIT_REWARD_FAILED if failures else 0


def audit_command(args) -> int:
    from k2rl.critic.audit import format_report, run_audit

    report = run_audit(args.name, parse_options(args.option, args.options), timeout_s=args.timeout, corpus=args.corpus)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print("\n".join(format_report(report)))
    if report.reward_failures:
        return EXIT_REWARD_FAILED
    return EXIT_HACK if report.failed else 0
