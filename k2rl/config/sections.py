"""The recipe's sections as typed dataclasses: every key a recipe may set, with its type and default.

Loading and validation (YAML, ``extends:``, dotted overrides) live in :mod:`.loading`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from k2rl.errors import K2RLError
from k2rl.config.rl_data import DifficultyFilterConfig, DynamicSamplingConfig, SamplingConfig


@dataclass
class PolicyConfig:
    """Where the policy comes from: a fresh preset (built into the run directory) or a checkpoint."""

    # build a random K2-architecture model locally (k2rl.policy.build.PRESETS: one builder per name)
    preset: Literal["k2-tiny", "k2-tiny-mla576"] | None = None
    model: str | None = None  # local path or hub id, loaded with from_pretrained
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"  # k2rl.policy.precision: float32 on a CPU
    trust_remote_code: bool = False


@dataclass
class DataConfig:
    """Task data: the built-in generator or any HF dataset id / JSONL / Parquet file."""

    source: str = "arithmetic"
    columns: dict[str, str] = field(default_factory=dict)  # k2rl column -> dataset column
    split: str = "train"
    eval_split: str | None = None  # a second split of the same source for held-out eval
    eval_source: str | None = None  # or a second file
    train_size: int | None = None
    eval_size: int = 200
    system_prompt: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # generator options (built-in tasks)
    filter: DifficultyFilterConfig | None = None  # e.g. {pass_k: 8, min: 0.1, max: 0.9}: keep moderate prompts


@dataclass
class WarmStartConfig:
    """A short supervised phase on the answer format, so RL starts from a non-zero reward."""

    enabled: bool = True
    max_steps: int = 300
    learning_rate: float = 3e-3
    batch_size: int = 32
    warmup_ratio: float = 0.05
    # Critic prompts with *random* verdicts mixed in: teaches a small policy the verdict format for the
    # rubric reward without telling it which answer is better (judgment comes from critic refinement).
    critic_format_rows: int = 0
    # Extra copies of each tool demonstration's last step: the conversation up to its last tool result as
    # the prompt, the final answer as the completion. They train reading the tool's output without
    # training the first token, so how often the warm-started policy opens a tool call stays as the data has it.
    answer_drills: int = 0
    trl: dict[str, Any] = field(default_factory=dict)  # any other SFTConfig field (k2rl/trainer/trl_options.py)


@dataclass
class ExpertSelectionConfig:
    """Expert-selective LoRA (ESFT): adapt only the routed experts the task actually uses.

    ``threshold_p: null`` adapts every routed expert. Otherwise the router is profiled on
    ``profile_prompts`` training prompts and, per layer, the most relevant experts are kept until their
    cumulative relevance share reaches ``threshold_p``.
    """

    threshold_p: float | None = None
    score: Literal["gate", "share"] = "gate"  # average gate weight, or share of token selections
    profile_prompts: int = 256


# What trainer.lora.targets may name (k2rl.experts.lora attaches each).
LORA_TARGETS = ("routed_experts", "shared_experts", "mlp", "attention")


def check_lora_targets(targets: list[str]) -> None:
    """``trainer.lora.targets`` names known groups, at least one (checked with the recipe, and again
    when the adapters are attached)."""
    unknown = set(targets) - set(LORA_TARGETS)
    if unknown or not targets:
        raise K2RLError(f"trainer.lora.targets: unknown {sorted(unknown) or 'empty list'}; "
                        f"choose from {sorted(LORA_TARGETS)}")


@dataclass
class LoraConfig:
    """LoRA adapters: ``routed_experts``/``shared_experts`` of an MoE (PEFT ``target_parameters``), ``mlp``/``attention`` linears."""

    r: int = 4
    alpha: int = 8
    targets: list[str] = field(default_factory=lambda: ["routed_experts"])
    expert_selection: ExpertSelectionConfig = field(default_factory=ExpertSelectionConfig)


@dataclass
class BudgetConfig:
    """Per-task token budgets: a response past its task's budget is cut there and penalised.

    The task type comes from the dataset column ``column``; ``budgets`` maps its values to a token
    budget and ``default`` covers the rest (``null``: no budget for unlisted tasks). The penalty is
    subtracted from the reward of every response that did not finish within its budget.
    """

    column: str | None = None  # null: budget control off
    budgets: dict[str, int] = field(default_factory=dict)
    default: int | None = None
    penalty: float = 0.5


@dataclass
class PtxConfig:
    """PTX: a language-modelling loss on a curated dataset, added to the RL loss against forgetting.

    ``source``: ``sft`` (the task's own warm-start pairs), a JSONL/Parquet file or an HF dataset id with
    a ``text_column``. ``weight: 0`` (the default) turns PTX off.
    """

    source: str = "sft"
    weight: float = 0.0
    text_column: str = "text"
    split: str = "train"
    batch_size: int = 8
    max_length: int = 64


@dataclass
class TrainerConfig:
    """The RL phase (TRL GRPOTrainer and the k2rl variants built on it)."""

    algorithm: Literal["grpo", "k2", "ppo"] = "grpo"  # k2: the K1.5/K2 squared loss; ppo: value head + GAE
    tau: float = 0.1  # k2: weight of the log-ratio term in (r - mean r - tau * log ratio)^2
    importance_sampling_level: Literal["token", "sequence"] = "token"  # sequence + loss_type grpo: GSPO
    temperature_schedule: Literal["constant", "linear", "cosine"] = "constant"
    temperature_end: float | None = None  # sampling temperature at the last step (start: ``temperature``)
    gamma: float = 1.0  # ppo: discount over completion tokens
    gae_lambda: float = 0.95  # ppo
    vf_coef: float = 0.5  # ppo: weight of the value loss
    cliprange_value: float = 0.2  # ppo: value predictions move at most this far from the rollout's
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    ptx: PtxConfig = field(default_factory=PtxConfig)
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"] = "dapo"  # TRL's
    max_steps: int = 100
    learning_rate: float = 5e-4
    per_device_train_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    num_generations: int = 8
    max_completion_length: int = 16
    temperature: float = 1.0
    beta: float = 0.0
    epsilon: float = 0.2
    num_iterations: int = 1
    scale_rewards: Literal["group", "batch", "none"] = "group"  # TRL's advantage scaling
    logging_steps: int = 5
    eval_steps: int = 25
    max_grad_norm: float = 1.0
    lora: LoraConfig = field(default_factory=LoraConfig)
    router_trainable: bool = False  # train the MoE routers' weights too (saved with the adapter)
    routing_replay: bool = False  # training forwards reuse the experts chosen during rollout
    save_steps: int = 0  # checkpoint every N RL steps (0: none); `k2rl train ... --resume` continues
    save_total_limit: int = 2
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # prompt order: uniform, prioritized, curriculum
    dynamic_sampling: DynamicSamplingConfig = field(default_factory=DynamicSamplingConfig)  # refill zero-variance groups
    optimizer: Literal["adamw", "muon", "muonclip"] = "adamw"  # muon: Muon per matrix/expert block, AdamW on the rest; muonclip: + QK-Clip
    muon_learning_rate: float | None = None  # muon's rate (null: 2 x learning_rate, which stays AdamW's)
    # Each Muon block's step RMS: "adamw" (the RMS AdamW's step would have for that block now) or "moonshot"
    # (fixed at 0.2, "Muon is Scalable"; drifts on short, noisy LoRA fine-tunes: README "Choosing Muon")
    muon_step_rms: Literal["adamw", "moonshot"] = "adamw"
    reset_optimizer_every: int = 0  # K1.5: empty the optimizer state every N optimizer steps (0: never)
    qk_clip_tau: float = 100.0  # muonclip: a head whose largest attention logit passes this is rescaled (K2: 100)
    trl: dict[str, Any] = field(default_factory=dict)  # any other GRPOConfig field (k2rl/trainer/trl_options.py)

    def __post_init__(self):
        if self.muon_learning_rate is not None and self.muon_learning_rate <= 0:
            raise ValueError(f"trainer.muon_learning_rate must be positive, got {self.muon_learning_rate}")
        if self.reset_optimizer_every < 0:
            raise ValueError(f"trainer.reset_optimizer_every must be 0 (never) or positive, got {self.reset_optimizer_every}")
        if self.qk_clip_tau <= 0:
            raise ValueError(f"trainer.qk_clip_tau must be positive, got {self.qk_clip_tau}")
        if self.optimizer == "muonclip" and "attention" not in self.lora.targets:
            raise ValueError("trainer.optimizer: muonclip clips attention logits, but no attention weights are trained "
                             f"(trainer.lora.targets: {self.lora.targets}); use muon, or add attention to the targets")


@dataclass
class RewardSpec:
    """One reward in the weighted sum: a registered name, its weight and its options."""

    name: str
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None  # seconds per call; None: k2rl.rewards.isolation.default_timeout
    label: str | None = None  # a distinct name in logs, to use one reward twice with other options
    max_failure_fraction: float | None = None  # None: reward_failures.max_failure_fraction


@dataclass
class RewardFailureConfig:
    """When contained reward failures stop the run: more than this share of samples, once enough were seen."""

    max_failure_fraction: float = 0.2
    min_samples: int = 32


@dataclass
class CriticConfig:
    """The self-critic behind the ``rubric`` reward, its cost bounds and closed-loop refinement."""

    model: str | None = None  # None or "policy": the policy being trained (same weights); else a path
    pairs_per_group: int = 4  # pairs judged per group of samples (each in both orders, per rubric)
    max_new_tokens: int = 4  # critic tokens per verdict, after answer_prefix
    batch_size: int = 32
    answer_prefix: str = "Verdict:"  # start of the critic's answer; "" lets it write freely first
    prompt: Literal["full", "compact"] = "full"  # rubric rendering; compact suits small critics (rewards/rubric/prompt.py)
    refine: bool = False  # train the critic on verifier-labelled pairs (auxiliary loss, same weights)
    refine_weight: float = 0.1
    refine_max_examples: int = 16  # labelled critic prompts per step (per critic step with an own adapter)
    # shared: the critic's loss joins the policy's update (K2 style). own: a critic adapter on top of the
    # policy's, with its own optimizer, steps and replay (k2rl/critic/adapter.py explains when and why).
    refine_adapter: Literal["shared", "own"] = "shared"
    refine_learning_rate: float = 5e-3  # own adapter only
    refine_steps: int = 4  # own adapter only: critic optimizer steps after each RL step
    refine_replay: int = 1024  # own adapter only: most recent labelled verdicts kept to draw from
    refine_reservoir: int = 4096  # own adapter only: plus a uniform sample of all verdicts so far; 0 = off (k2rl/critic/replay.py)

    def __post_init__(self):
        if self.refine_adapter == "own" and (
            self.refine_steps < 1 or self.refine_replay < 2 or self.refine_reservoir < 0 or self.refine_learning_rate <= 0
        ):
            raise ValueError("critic: refine_adapter own needs refine_steps >= 1, refine_replay >= 2, "
                             "refine_reservoir >= 0 and refine_learning_rate > 0")


@dataclass
class EvalConfig:
    """The held-out evaluation, before and after RL, every ``trainer.eval_steps`` and by ``k2rl eval``."""

    max_new_tokens: int = 16
    batch_size: int = 64
    rewards: list[str] | None = None  # reward labels/names to report; null: the recipe's (minus rubric); the first is the headline
    k: int = 0  # pass@k from k sampled completions per prompt (0: greedy only)
    temperature: float = 1.0  # sampling temperature for pass@k
    by: str | None = None  # also report per value of this held-out column (e.g. a task type)


@dataclass
class RolloutConfig:
    """The rollout engine (``k2rl.rollouts``): multi-turn tools, partial rollouts, overlapped scoring.

    Off by default: with no tools, no overlap and no partial rollouts, TRL's own generation runs.
    """

    backend: Literal["transformers", "vllm"] = "transformers"
    vllm_mode: Literal["colocate", "server"] = "colocate"
    tools: list[str] = field(default_factory=list)  # e.g. ["python"]: run code in the sandbox
    # A multi-turn task's Environment (k2rl.rollouts.environment): a built-in name or module:Class, and its options.
    environment: str | None = None
    environment_options: dict[str, Any] = field(default_factory=dict)
    sandbox: str = "local"  # sandbox backend for the python tool
    tool_timeout_s: float = 5.0
    max_turns: int = 1
    max_tool_calls: int = 4
    token_budget: int | None = None  # completion tokens per rollout (policy + tool); default trainer.max_completion_length
    partial_rollouts: bool = False
    iteration_budget: int = 64  # with partial_rollouts: policy tokens per rollout per iteration before pausing
    overlap: bool = False  # score chunk k on a worker thread while chunk k+1 generates (same weights)
    chunks: int = 4
    queue_size: int = 2
    # backend vllm: k2rl's own engine process (k2rl.rollouts.vllm_engine)
    vllm_python: str | None = None  # the vLLM environment's python; default $K2RL_VLLM_PYTHON, then .venv-vllm
    vllm_compile: bool = False  # vLLM's compiled mode; off: eager (CPU: with k2rl's rotary workaround)
    vllm_max_model_len: int = 2048  # capped by the model's max_position_embeddings
    vllm_check_every: int = 10  # steps between checks of vLLM's log-probs against the policy's (0: only at start)
    vllm_check_threshold: float = 1.0e-3  # above it, training stops naming the likely cause
    vllm_check_prompts: int = 8
    max_staleness: int = 0  # 1: vLLM samples step t+1 while step t updates (k2rl.rollouts.ahead); 0: synchronous, as K2

    @property
    def enabled(self) -> bool:
        return (bool(self.tools) or self.environment is not None or self.partial_rollouts or self.overlap
                or self.backend == "vllm")

    @property
    def multi_turn(self) -> bool:
        """Rollouts may call tools: held-out evaluation runs the same loop."""
        return bool(self.tools) or self.environment is not None

    def __post_init__(self):
        if self.backend == "vllm" and self.vllm_mode == "server":
            raise ValueError("rollout.vllm_mode: server is not available; k2rl runs vLLM as a child process of the run "
                             "(colocate)")
        if self.vllm_check_every < 0 or self.vllm_check_threshold <= 0 or self.vllm_check_prompts < 1:
            raise ValueError("rollout: vllm_check_every must be >= 0, vllm_check_threshold > 0, vllm_check_prompts >= 1")
        if self.max_staleness not in (0, 1):
            raise ValueError(f"rollout.max_staleness must be 0 or 1, got {self.max_staleness}")
        if self.max_staleness and self.backend != "vllm":
            raise ValueError("rollout.max_staleness: 1 needs rollout.backend: vllm (transformers generates with the weights "
                             "being updated)")
        if self.max_staleness and self.partial_rollouts:
            raise ValueError("rollout.max_staleness: 1 cannot be combined with rollout.partial_rollouts")


@dataclass
class RunConfig:
    """A whole run. ``policy`` names the starting point; everything else has a default."""

    policy: PolicyConfig
    seed: int = 0
    output_dir: str = "runs"
    run_name: str | None = None
    # Trackers for the warm start and RL (transformers' integrations); offline: WANDB_MODE=offline, trackio and
    # MLflow write locally by default. metrics.jsonl is written either way.
    report_to: list[Literal["tensorboard", "wandb", "trackio", "mlflow"]] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec(name="exact_answer")])
    reward_failures: RewardFailureConfig = field(default_factory=RewardFailureConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)

    def __post_init__(self):
        if (self.policy.preset is None) == (self.policy.model is None):
            raise ValueError("policy: set exactly one of policy.preset or policy.model")
        if self.critic.refine and self.critic.refine_adapter == "own" and self.rollout.overlap:
            # Judging switches the model's active adapters, which would change the policy's weights under
            # the generation that overlap runs at the same time.
            raise ValueError("critic.refine_adapter: own cannot judge on rollout.overlap's scoring thread; turn one of them off")
        if any(spec.name == "environment" for spec in self.rewards) and self.rollout.environment is None:
            raise ValueError("rewards: environment is the score of rollout.environment; name an environment with "
                             "a reward of its own (e.g. rollout.environment: tool_use)")
        if self.data.filter is not None and self.rewards and self.rewards[0].name == "rubric":
            raise ValueError("data.filter scores prompts with the first reward, a verifier; put the rubric reward after it")
