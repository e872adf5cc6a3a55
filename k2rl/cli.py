"""The ``k2rl`` command line.

Each subsystem contributes its own commands through an ``add_commands(subparsers)`` function; every
sub-parser sets ``func`` to a handler ``handler(args) -> int``. User errors (:class:`K2RLError`)
become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from k2rl.errors import K2RLError

# Modules that contribute sub-commands, imported lazily so `k2rl --help` stays fast.
COMMAND_MODULES = (
    "k2rl.commands",
    "k2rl.reward_commands",
    "k2rl.sandboxes.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="k2rl", description="RL post-training with verifiable rewards.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # a real import error inside the module is a bug: surface it
                raise
            continue
        module.add_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may come in any position, also after options (`eval RUN --model M eval.k=4`)
    if extra and isinstance(getattr(args, "overrides", None), list) and all(
        "=" in item and not item.startswith("-") for item in extra
    ):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except K2RLError as exc:
        print(f"k2rl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
