"""One TRL config object for a run: ``K2GRPOConfig``, TRL's ``GRPOConfig`` plus the K2 recipe's fields.

TRL's convention for a variant is ``XConfig(GRPOConfig)`` validated once in ``__post_init__``; k2rl
follows it. :func:`grpo_config` builds it from the recipe's ``trainer`` section in one place, and the
trainers only read it: nothing mutates it after construction.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from trl import GRPOConfig

from k2rl.config import BudgetConfig, TrainerConfig
from k2rl.errors import K2RLError
from k2rl.policy.precision import trainer_precision
from k2rl.rollouts.budget import check_budget_config
from k2rl.trainer.optimizers import OPTIMIZERS
from k2rl.trainer.schedules import check_temperatures
from k2rl.trainer.trl_options import COMMON_DEFAULTS, build_trl_config, trl_fields

ALGORITHMS = ("grpo", "k2", "ppo")


@dataclass
class K2GRPOConfig(GRPOConfig):
    """GRPOConfig plus the K1.5/K2 recipe: algorithm, K2 loss, PPO value head, temperature decay, budgets."""

    algorithm: str = field(default="grpo", metadata={"help": "grpo, k2 (K1.5/K2 squared loss) or ppo"})
    tau: float = field(default=0.1, metadata={"help": "k2: weight of the log-ratio term"})
    temperature_schedule: str = field(default="constant", metadata={"help": "constant, linear or cosine"})
    temperature_end: float | None = field(default=None, metadata={"help": "sampling temperature at the last step"})
    gamma: float = field(default=1.0, metadata={"help": "ppo: discount over completion tokens"})
    gae_lambda: float = field(default=0.95, metadata={"help": "ppo: GAE lambda"})
    vf_coef: float = field(default=0.5, metadata={"help": "ppo: weight of the value loss"})
    cliprange_value: float = field(default=0.2, metadata={"help": "ppo: value clipping range"})
    budget_column: str | None = field(default=None, metadata={"help": "task-type column for per-task token budgets"})
    budget_limits: dict = field(default_factory=dict, metadata={"help": "task type -> token budget"})
    budget_default: int | None = field(default=None, metadata={"help": "budget of unlisted task types"})
    budget_penalty: float = field(default=0.5, metadata={"help": "subtracted from over-budget responses"})
    routing_replay: bool = field(default=False, metadata={"help": "training forwards reuse the rollout's experts"})
    sampling: dict = field(default_factory=dict, metadata={"help": "trainer.sampling (k2rl.trainer.sampling)"})
    dynamic_sampling: dict = field(default_factory=dict, metadata={"help": "trainer.dynamic_sampling"})
    optimizer: str = field(default="adamw", metadata={"help": "adamw, or muon on 2-D weights (k2rl.trainer.optimizers)"})
    muon_learning_rate: float | None = field(default=None, metadata={"help": "muon: its rate (None: learning_rate)"})
    reset_optimizer_every: int = field(default=0, metadata={"help": "empty the optimizer state every N steps (0: never)"})

    def __post_init__(self):
        check_temperatures(self.temperature, self.temperature_end, self.temperature_schedule)
        check_budget_config(self.budget, self.max_completion_length)
        super().__post_init__()
        if self.algorithm not in ALGORITHMS:
            raise K2RLError(f"trainer.algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        if self.optimizer not in OPTIMIZERS:
            raise K2RLError(f"trainer.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.algorithm == "k2" and self.scale_rewards != "none":
            # The K2 loss wants r - mean_r per sample: TRL's advantage with unscaled rewards.
            raise K2RLError("trainer.algorithm k2 needs unscaled rewards (scale_rewards: none)")

    @property
    def budget(self) -> BudgetConfig:
        """The per-task token budgets (``column`` None: budget control off)."""
        return BudgetConfig(column=self.budget_column, budgets=dict(self.budget_limits), default=self.budget_default,
                            penalty=self.budget_penalty)


# Recipe keys that are GRPOConfig / K2GRPOConfig fields of the same name and meaning.
SAME_NAMED = (
    "algorithm", "tau", "temperature_schedule", "temperature_end", "gamma", "gae_lambda", "vf_coef", "cliprange_value",
    "routing_replay", "importance_sampling_level",  # "sequence" with loss_type grpo: GSPO
    "max_steps", "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_generations",
    "max_completion_length", "temperature", "beta", "epsilon", "num_iterations", "loss_type", "max_grad_norm",
    "logging_steps", "save_total_limit", "optimizer", "muon_learning_rate", "reset_optimizer_every",
)


# GRPOConfig fields k2rl sets from other recipe keys (``trainer.trl`` may not set them).
OWNED = {
    **{name: f"trainer.{name}" for name in SAME_NAMED},
    "budget_column": "trainer.budget.column", "budget_limits": "trainer.budget.budgets",
    "budget_default": "trainer.budget.default", "budget_penalty": "trainer.budget.penalty",
    "scale_rewards": "trainer.scale_rewards", "reward_weights": "rewards[].weight",
    "save_strategy": "trainer.save_steps", "save_steps": "trainer.save_steps",
    "use_vllm": "rollout.backend", "vllm_mode": "rollout.vllm_mode",
    "vllm_importance_sampling_correction": "rollout.backend", "vllm_importance_sampling_mode": "rollout.backend",
    "sampling": "trainer.sampling", "dynamic_sampling": "trainer.dynamic_sampling",
}


def trl_options(recipe: TrainerConfig) -> dict:
    """The recipe's ``trainer.trl`` fields, checked against K2GRPOConfig (see :mod:`.trl_options`)."""
    return trl_fields(K2GRPOConfig, recipe.trl, OWNED, "trainer.trl")


def grpo_config(
    recipe: TrainerConfig, reward_weights: list[float], out_dir: Path, seed: int, report_to=(), **extra
) -> K2GRPOConfig:
    """The run's K2GRPOConfig from the recipe's ``trainer`` section (``report_to``: the run's trackers;
    ``extra``: further fields, e.g. vLLM's)."""
    same_named = {name: getattr(recipe, name) for name in SAME_NAMED}
    defaults = {  # k2rl's choices that ``trainer.trl`` may override
        **COMMON_DEFAULTS,
        "lr_scheduler_type": "constant_with_warmup",
        "warmup_steps": max(recipe.max_steps // 20, 1),
        "log_completions": False,
    }
    return build_trl_config(
        K2GRPOConfig,
        "trainer.trl" if recipe.trl else "trainer",
        output_dir=str(out_dir),
        **same_named,
        budget_column=recipe.budget.column,
        budget_limits=dict(recipe.budget.budgets),
        budget_default=recipe.budget.default,
        budget_penalty=recipe.budget.penalty,
        sampling=dataclasses.asdict(recipe.sampling),
        dynamic_sampling=dataclasses.asdict(recipe.dynamic_sampling),
        scale_rewards="none" if recipe.algorithm == "k2" else recipe.scale_rewards,  # the K2 loss wants r - mean r
        reward_weights=reward_weights,
        save_strategy="steps" if recipe.save_steps else "no",
        save_steps=recipe.save_steps or 500,
        report_to=list(report_to),
        seed=seed,
        **trainer_precision(),
        **{**defaults, **trl_options(recipe)},
        **extra,
    )
