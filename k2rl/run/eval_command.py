"""``k2rl eval RECIPE|RUN_DIR [--adapter DIR] [--model PATH]``: the held-out evaluation on its own.

A run directory brings its resolved recipe (``config.yaml``), its base model (``warm_start/``, else
``initial_policy/``) and its ``adapter/``: ``k2rl eval RUN_DIR`` reproduces the "after" figure of
``k2rl train``, and ``k2rl eval RUN_DIR --model RUN_DIR/warm_start`` (no adapter unless named) the
"before" one. A recipe evaluates ``--model`` (or its ``policy.model``) with an optional adapter, on its
held-out rows or, when its ``data.source`` is an evaluation set such as ``humaneval``, on that set.
Each evaluation writes a new report, named by what it evaluated -- ``eval-warm_start+adapter.json``,
``eval-warm_start.json`` (in the run directory, else the current one) -- and never over another
(``-2``, ``-3``, ... when the name is taken; ``--out`` names the file, and refuses one that exists).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from k2rl import resources
from k2rl.config import load_config
from k2rl.data.sources import held_out_data
from k2rl.errors import K2RLError
from k2rl.layout import RunLayout
from k2rl.policy.build import load_policy
from k2rl.policy.source import resolve_model_source
from k2rl.run.eval_rewards import eval_rewards
from k2rl.run.evaluation import evaluate
from k2rl.run.preflight import check_eval_inputs


def _slug(path: str) -> str:
    name = Path(path.rstrip("/")).name or path
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"


def report_path(folder: Path, model: str, adapter: str | None, out: str | None) -> Path:
    """Where this evaluation's report goes: ``--out``, or a new file named by model and adapter in ``folder``."""
    if out:
        path = Path(out)
        if path.exists():
            raise K2RLError(f"--out {path} exists; k2rl eval never writes over another report")
        return path
    stem = "eval-" + _slug(model) + (f"+{_slug(adapter)}" if adapter else "")
    path, suffix = folder / f"{stem}.json", 1
    while path.exists():
        suffix += 1
        path = folder / f"{stem}-{suffix}.json"
    return path


def _sources(target: Path, model: str | None, adapter: str | None) -> tuple[Path, str, str | None, Path]:
    """(recipe, model, adapter, folder for the report) for a run directory or a recipe file."""
    if target.is_dir():
        layout = RunLayout(target)
        recipe = layout.config
        if not recipe.is_file():
            raise K2RLError(f"{target} is not a run directory (no config.yaml)")
        if model is None:
            base = next((path for path in (layout.warm_start, layout.initial_policy) if path.is_dir()), None)
            model = str(base) if base else None
            if adapter is None and layout.adapter.is_dir():
                adapter = str(layout.adapter)
        return recipe, model, adapter, target
    return target, model, adapter, Path(".")


def run_eval(target: str, overrides=(), model: str | None = None, adapter: str | None = None,
             out: str | None = None) -> dict:
    """Evaluate a model (and adapter) on the recipe's held-out data; returns the report written to ``out``."""
    recipe, model, adapter, folder = _sources(Path(target), model, adapter)
    config = load_config(recipe, list(overrides))
    return evaluate_model(config, model, adapter, folder, out, label=str(recipe), target=target)


def evaluate_model(config, model: str | None, adapter: str | None, folder: Path, out: str | None = None,
                   held_out=None, label: str = "", target: str = "") -> dict:
    """The evaluation behind ``k2rl eval`` (and :func:`k2rl.api.evaluate`): ``held_out`` rows, else the
    recipe's; the report goes to a new file in ``folder`` (or ``out``) and is returned."""
    model = model or config.policy.model
    if model is None:
        raise K2RLError(f"{target or 'the recipe'}: policy.preset {config.policy.preset!r} has no trained weights to "
                        "evaluate; pass --model PATH (or a run directory)")
    resolve_model_source(model)
    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise K2RLError(f"--adapter {adapter}: not a PEFT adapter directory (no adapter_config.json)")
    path = report_path(folder, model, adapter, out)
    held_out = held_out if held_out is not None else held_out_data(config.data, config.seed)
    check_eval_inputs(config, held_out)
    rewards = eval_rewards(config)
    policy = load_policy(model, dtype=config.policy.dtype, trust_remote_code=config.policy.trust_remote_code)
    network = policy.model
    if adapter is not None:
        from peft import PeftModel

        network = PeftModel.from_pretrained(network, adapter)
    try:
        report = evaluate(network, policy.tokenizer, held_out, rewards, config.eval, config.seed, config.rollout)
    finally:
        resources.close_all()  # sandboxes and checker pools the rewards started
    report = {"model": model, "adapter": adapter, "recipe": label, **report}
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"k2rl: eval accuracy={report['accuracy']:.3f} metric={report['metric']} rows={report['rows']} "
          f"model={model} adapter={adapter} out={path}", flush=True)
    return report
