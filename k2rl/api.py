"""The Python API: a recipe, changed in code, trained and evaluated from a script or a notebook.

Everything the CLI does, with Python objects where the CLI takes files and names::

    import k2rl

    def regex_answer(prompts, completions, answer, **kwargs):
        ...
        return [1.0 if ... else 0.0 for ...]

    trainer = k2rl.Trainer("configs/quickstart.yaml", reward_funcs=[regex_answer],
                           train_dataset=my_dataset, overrides={"trainer.max_steps": 20})
    summary = trainer.train()       # the dict k2rl train writes as summary.json
    report = trainer.evaluate()     # the held-out report of the trained adapter

``reward_funcs`` replace the recipe's ``rewards:`` (weights from ``reward_weights``, default 1 each),
called exactly as in training and evaluation (README, "The reward calling convention"); a
``datasets.Dataset`` replaces ``data.source`` and is prepared like a file's rows (``question`` and
``answer`` columns, or ``data.columns`` to map them). ``overrides`` take dotted keys and Python
values, validated as a recipe's. Nothing here re-implements a phase: it calls what ``k2rl train`` and
``k2rl eval`` call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from k2rl.config import RunConfig, load_config
from k2rl.errors import K2RLError


def load_recipe(path: str | Path, overrides: Mapping[str, Any] | Sequence[str] = ()) -> RunConfig:
    """A recipe file with ``overrides`` (``{"trainer.max_steps": 2}`` or ``["trainer.max_steps=2"]``), validated."""
    if isinstance(overrides, Mapping):
        return load_config(path, [], dict(overrides))
    return load_config(path, list(overrides))


def _with_rewards(config: RunConfig, reward_funcs, reward_weights) -> RunConfig:
    """``config`` whose ``rewards:`` are the functions given in code (registered under their names)."""
    from dataclasses import replace

    from k2rl.config import RewardSpec
    from k2rl.rewards.registry import register_functions

    if reward_funcs is None:
        return config
    if callable(reward_funcs):
        reward_funcs = [reward_funcs]
    names = register_functions(list(reward_funcs))
    weights = [1.0] * len(names) if reward_weights is None else [float(w) for w in reward_weights]
    if len(weights) != len(names):
        raise K2RLError(f"reward_weights has {len(weights)} weights for {len(names)} reward_funcs")
    specs = [RewardSpec(name=name, weight=weight) for name, weight in zip(names, weights)]
    changed = replace(config, rewards=specs, eval=replace(config.eval, rewards=None))
    changed.__dict__["_sources"] = getattr(config, "_sources", {})
    return changed


class Trainer:
    """A recipe with rewards and data given in code; ``train()`` and ``evaluate()`` return what the CLI
    writes (the summary, the held-out report)."""

    def __init__(self, recipe: str | Path | RunConfig, *, reward_funcs: Callable | Sequence[Callable] | None = None,
                 reward_weights: Sequence[float] | None = None, train_dataset=None, eval_dataset=None,
                 overrides: Mapping[str, Any] | Sequence[str] = ()):
        config = recipe if isinstance(recipe, RunConfig) else load_recipe(recipe, overrides)
        if isinstance(recipe, RunConfig) and overrides:
            raise K2RLError("overrides apply to a recipe file; change a loaded RunConfig with load_recipe(path, overrides)")
        if eval_dataset is not None and train_dataset is None:
            raise K2RLError("eval_dataset needs train_dataset too (or evaluate(eval_dataset=...) after training)")
        self.config = _with_rewards(config, reward_funcs, reward_weights)
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.summary: dict | None = None
        self._data = None

    def _task_data(self):
        if self.train_dataset is None:
            return None
        if self._data is None:
            from k2rl.data.sources import task_data_from

            self._data = task_data_from(self.train_dataset, self.eval_dataset, self.config.data, self.config.seed)
        return self._data

    def train(self, resume: str | bool | None = None) -> dict:
        """Run the recipe (``resume``: as ``k2rl train --resume``); returns the run's summary."""
        from k2rl.recipe import train
        from k2rl.run.recipe_checks import check_recipe

        check_recipe(self.config, rows_given=self.train_dataset is not None)
        self.summary = train(self.config, resume=resume, data=self._task_data())
        return self.summary

    def evaluate(self, model: str | None = None, adapter: str | None = None, eval_dataset=None,
                 out: str | None = None) -> dict:
        """The held-out report: of the trained run (its base model and adapter) unless ``model`` names
        another; on ``eval_dataset``, else this trainer's held-out rows, else the recipe's."""
        from k2rl.run.eval_command import evaluate_model

        folder = Path(".")
        if self.summary is not None and model is None:
            run_dir = Path(self.summary["run_dir"])
            folder = run_dir
            base = next((run_dir / n for n in ("warm_start", "initial_policy") if (run_dir / n).is_dir()), None)
            model = str(base) if base else None
            if adapter is None and (run_dir / "adapter").is_dir():
                adapter = str(run_dir / "adapter")
        held_out = None
        if eval_dataset is not None:
            from k2rl.data.sources import held_out_from

            held_out = held_out_from(eval_dataset, self.config.data)
        elif self._task_data() is not None:
            held_out = self._task_data().eval
        return evaluate_model(self.config, model, adapter, folder, out, held_out=held_out, label="python api")


def train(recipe: str | Path | RunConfig, **kwargs) -> dict:
    """``Trainer(recipe, **kwargs).train()``: the summary of the run."""
    resume = kwargs.pop("resume", None)
    return Trainer(recipe, **kwargs).train(resume=resume)


def evaluate(recipe: str | Path | RunConfig, *, model: str | None = None, adapter: str | None = None,
             reward_funcs=None, eval_dataset=None, overrides=(), out: str | None = None) -> dict:
    """The held-out report of ``model`` (and ``adapter``) under the recipe, with rewards and rows given in code."""
    return Trainer(recipe, reward_funcs=reward_funcs, overrides=overrides).evaluate(
        model=model, adapter=adapter, eval_dataset=eval_dataset, out=out)
