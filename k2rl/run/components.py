"""Checks of a recipe that need no data and no heavy import: every tracker, tool, sandbox and
generation backend it names is known and installed. ``k2rl train`` runs them before torch loads
(with the rest of :mod:`.recipe_checks`)."""

from __future__ import annotations

import importlib.util

from k2rl.config import RunConfig
from k2rl.config.suggest import did_you_mean
from k2rl.errors import K2RLError

# report_to name -> modules that provide it (any one of them), as the HF Trainer's callbacks import them.
TRACKER_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "trackio": ("trackio",),
                   "mlflow": ("mlflow",)}


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_components(config: RunConfig) -> None:
    """Every tracker, tool, sandbox and generation backend the recipe names is known and installed (checked
    before any data is drawn or model built: a missing one would otherwise fail minutes in)."""
    from k2rl.rollouts.tools import check_tool_names
    from k2rl.sandboxes import BACKENDS

    for name in config.report_to:
        if not any(map(_installed, TRACKER_MODULES[name])):
            raise K2RLError(f"report_to: {name} is not installed (pip install {TRACKER_MODULES[name][0]}), "
                            f"or drop it from report_to")
    check_tool_names(config.rollout.tools)
    if config.rollout.sandbox not in BACKENDS:
        raise K2RLError(f"rollout.sandbox: unknown sandbox backend {config.rollout.sandbox!r} "
                        f"(known: {', '.join(BACKENDS)}){did_you_mean(config.rollout.sandbox, BACKENDS)}")
    if config.rollout.sandbox == "docker" and not _installed("docker"):
        raise K2RLError("rollout.sandbox: docker needs the docker package (pip install 'k2rl[docker]')")
    if config.rollout.backend == "vllm":
        from k2rl.rollouts.vllm_engine import vllm_python

        if vllm_python(config.rollout.vllm_python) is None:  # the engine runs in its own environment
            raise K2RLError("rollout.backend: vllm needs the vLLM environment (.venv-vllm, built by scripts/setup.sh; "
                            "or set K2RL_VLLM_PYTHON / rollout.vllm_python), or use rollout.backend=transformers")
