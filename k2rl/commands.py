"""Core sub-commands: ``k2rl train``, ``k2rl eval``, ``k2rl rollouts`` and ``k2rl init-policy``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _recipe_first(target: str, overrides: list[str], check) -> None:
    """``k2rl eval`` / ``rollouts``: a mistake in the recipe (a RUN_DIR's config.yaml) or an override is one
    line before the model stack imports; ``check`` adds the command's own recipe checks."""
    from k2rl.config import load_config
    from k2rl.layout import RunLayout

    path = Path(target)
    recipe = RunLayout(path).config if path.is_dir() else path
    if recipe.is_file():  # else the command itself says what is missing
        check(load_config(recipe, overrides))


def _train(args: argparse.Namespace) -> int:
    from k2rl.config import load_config

    if isinstance(args.resume, str) and "=" in args.resume:  # `--resume key=value`: a bare --resume
        args.overrides, args.resume = [*args.overrides, args.resume], True
    config = load_config(args.config, args.overrides)
    from k2rl.run.recipe_checks import check_recipe

    check_recipe(config)  # a recipe mistake is reported before torch loads
    from k2rl.recipe import train

    train(config, resume=args.resume)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from k2rl.run.recipe_checks import check_eval_section

    _recipe_first(args.target, args.overrides, check_eval_section)
    from k2rl.run.eval_command import run_eval

    run_eval(args.target, args.overrides, model=args.model, adapter=args.adapter, out=args.out)
    return 0


def _rollouts(args: argparse.Namespace) -> int:
    from k2rl.run.recipe_checks import check_rewards

    _recipe_first(args.target, args.overrides, check_rewards)
    from k2rl.run.rollouts_command import run_rollouts

    run_rollouts(args.target, args.overrides, n=args.n, per_prompt=args.per_prompt, model=args.model,
                 adapter=args.adapter, out=args.out, seed=args.seed)
    return 0


def _init_policy(args: argparse.Namespace) -> int:
    from k2rl.policy.build import init_policy

    out = init_policy(args.preset, args.out_dir, seed=args.seed)
    print(f"k2rl: saved a {args.preset} policy to {out}")
    return 0


def add_commands(subparsers) -> None:
    train = subparsers.add_parser("train", help="run a recipe (YAML) with optional key.path=value overrides")
    train.add_argument("config", help="path to a YAML recipe, e.g. configs/quickstart.yaml")
    train.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.learning_rate=5e-4")
    train.add_argument(
        "--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
        help="continue a run from its last checkpoint (default run: output_dir/run_name)",
    )
    train.set_defaults(func=_train)

    evaluate = subparsers.add_parser(
        "eval", help="evaluate a model or saved adapter on a recipe's held-out data (writes a new eval-*.json)"
    )
    evaluate.add_argument("target", metavar="RECIPE|RUN_DIR", help="a YAML recipe or a run directory")
    evaluate.add_argument("overrides", nargs="*", help="dotted overrides, e.g. eval.k=8 eval.by=task")
    evaluate.add_argument("--model", help="base model (default: the run's warm_start/, or the recipe's policy.model); "
                                          "naming it drops the run's default adapter")
    evaluate.add_argument("--adapter", help="PEFT adapter directory (default for a run directory: its adapter/)")
    evaluate.add_argument("--out", help="where to write the report (default: a new eval-MODEL[+ADAPTER].json in RUN_DIR or .)")
    evaluate.set_defaults(func=_eval)

    rollouts = subparsers.add_parser(
        "rollouts", help="sample a few prompts with the recipe's policy; print and save each completion's reward scores"
    )
    rollouts.add_argument("target", metavar="RECIPE|RUN_DIR", help="a YAML recipe or a run directory")
    rollouts.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.temperature=0.7")
    rollouts.add_argument("-n", type=int, default=8, help="prompts to sample (default 8)")
    rollouts.add_argument("--per-prompt", type=int, default=1, help="completions per prompt (default 1)")
    rollouts.add_argument("--model", help="base model (default: the run's, or the recipe's policy)")
    rollouts.add_argument("--adapter", help="PEFT adapter directory (default for a run directory: its adapter/)")
    rollouts.add_argument("--out", help="JSONL file to write (default: a new rollouts-*.jsonl in RUN_DIR or .)")
    rollouts.add_argument("--seed", type=int, default=None, help="which prompts and samples (default: the recipe's seed)")
    rollouts.set_defaults(func=_rollouts)

    init = subparsers.add_parser("init-policy", help="build a randomly initialised K2-architecture policy")
    init.add_argument("out_dir", help="directory to save the model and tokenizer to")
    init.add_argument("--preset", default="k2-tiny", help="architecture preset (default: k2-tiny)")
    init.add_argument("--seed", type=int, default=0)
    init.set_defaults(func=_init_policy)
