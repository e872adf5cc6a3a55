"""The one door to TRL's internals: every private GRPOTrainer name k2rl touches, in this module only.

TRL's public seams (``reward_funcs``, ``rollout_func``, callbacks, the ``log_metric`` keyword of reward
functions) cover most of k2rl. What they do not cover -- changing the samples before they are scored,
adding a column for the rewards, a context around TRL's generation, its reward functions or its
log-probability forwards, replacing the policy loss, writing a training metric -- needs
GRPOTrainer's private methods. Each is overridden here exactly once and turned into a public hook
with a plain name; the k2rl trainers override the hooks, never TRL's private methods. A TRL upgrade
is then checked in one file: ``tests/test_trl_door.py`` fails loudly when a name or signature used
here changes.
"""

from __future__ import annotations

import contextlib
import inspect

from trl import GRPOTrainer
from trl.trainer.utils import RepeatSampler, add_fused_lm_head

WRITTEN_AGAINST = "trl==1.16.0"

# (method, parameters after self) as this module calls or overrides them.
PRIVATE_METHODS = {
    "_generate_single_turn": ("prompt_ids", "images", "multimodal_fields", "num_generations", "has_tool_images"),
    "_generate": ("prompts",),
    "_generate_and_score_completions": ("inputs",),
    "_calculate_rewards": ("inputs", "prompts", "completions", "completion_ids_list"),
    "_get_per_token_logps_and_entropies": ("model", "input_ids", "attention_mask", "logits_to_keep"),
    "_compute_loss": ("model", "inputs"),
    "_get_train_sampler": ("dataset",),
}
REPEAT_SAMPLER_FIELDS = ("mini_repeat_count", "batch_size", "repeat_count", "seed")  # read by k2rl.trainer.sampling
EXTRA_FIELDS_INDEX = 5  # _generate returns (prompt_ids, completion_ids, tool_mask, completions, logprobs, extra_fields, ...)


class TRLSeams(GRPOTrainer):
    """GRPOTrainer with its private steps turned into public hooks (all no-ops here)."""

    # ---- hooks for subclasses ---------------------------------------------------------------

    def sampling_context(self) -> contextlib.AbstractContextManager:
        """Entered around each of TRL's own (non-``rollout_func``) generation calls."""
        return contextlib.nullcontext()

    def generation_context(self) -> contextlib.AbstractContextManager:
        """Entered around each generation of a batch: TRL's own or the ``rollout_func``, decoding included."""
        return contextlib.nullcontext()

    def rewards_context(self) -> contextlib.AbstractContextManager:
        """Entered around each call of TRL's reward functions on a generated batch."""
        return contextlib.nullcontext()

    def after_sampling(self, completion_ids: list, logprobs: list | None) -> tuple[list, list | None]:
        """The sampled completions (token ids, log-probabilities) before they are decoded and scored."""
        return completion_ids, logprobs

    def reward_columns(self) -> dict:
        """Extra per-sample columns handed to the reward functions as keyword arguments (then cleared)."""
        return {}

    def before_rollouts(self, inputs: list[dict]) -> None:
        """The dataset rows of a generation batch, before generation."""

    def after_rollouts(self, inputs: list[dict], output: dict) -> dict:
        """TRL's scored batch (advantages included), before it is split into training micro-batches."""
        return output

    def after_rewards(self, rewards_per_func) -> None:
        """The (samples x reward functions) reward matrix TRL has just computed."""

    def scoring_forward_context(self) -> contextlib.AbstractContextManager:
        """Entered around every forward that computes per-token log-probabilities."""
        return contextlib.nullcontext()

    def after_scoring_forward(self) -> None:
        """Called after every per-token log-probability forward."""

    def policy_loss(self, model, inputs):
        """The RL loss of one micro-batch; TRL's own unless overridden."""
        return self.trl_policy_loss(model, inputs)

    def prompt_sampler(self, default):
        """The sampler of training prompts for TRL's dataloader (``default``: TRL's RepeatSampler)."""
        return default

    # ---- TRL internals, called by name ------------------------------------------------------

    def trl_policy_loss(self, model, inputs):
        """TRL's clipped-surrogate policy loss (GRPOTrainer._compute_loss)."""
        return GRPOTrainer._compute_loss(self, model, inputs)

    def score_rollouts(self, inputs: list[dict]) -> dict:
        """TRL's whole rollout step for ``inputs`` (generation, rewards, advantages; the hooks above run)."""
        return self._generate_and_score_completions(inputs)

    def token_logps(self, model, input_ids, attention_mask, logits_to_keep, **kwargs):
        """(per-token log-probabilities, entropies, router aux loss), as TRL computes them for its loss."""
        return self._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, **kwargs)

    def record_metric(self, name: str, value: float) -> None:
        """Log ``value`` under ``name`` with this step's metrics (averaged like TRL's own)."""
        self._metrics["train" if self.model.training else "eval"][name].append(value)

    def refuse_lm_head(self, temperature: float, forward_before) -> None:
        """Re-fuse TRL's LM head at a new sampling ``temperature`` (it bakes the temperature in).

        ``forward_before`` is the base model's own ``forward`` attribute from before TRL first fused it
        (None when it had none), so wrappers never stack.
        """
        base = self.accelerator.unwrap_model(self.model).get_base_model()
        if forward_before is None:
            vars(base).pop("forward", None)
        else:
            base.forward = forward_before
        add_fused_lm_head(base, temperature=temperature, cast_lm_head_to_fp32=self.args.cast_lm_head_to_fp32,
                          outputs=("log_probs", "entropy"))

    def adopt_vllm_engine(self, generation) -> None:
        """Let TRL treat k2rl's own vLLM engine as its vLLM generator.

        TRL then calls ``generation.sync_weights()`` before the first rollouts of each new global step
        (with a ``rollout_func``), and applies its importance-sampling correction
        (``vllm_importance_sampling_*``) to the rollouts' log-probabilities against the policy's.
        Nothing else of TRL's vLLM code runs: with a ``rollout_func`` it only reads these three fields.
        """
        self.use_vllm = True
        self.vllm_generation = generation
        self._last_loaded_step = self.state.global_step  # the caller has just pushed this step's weights

    # ---- the overrides ----------------------------------------------------------------------

    def _generate_single_turn(self, *args, **kwargs):
        with self.sampling_context():
            completion_ids, logprobs = super()._generate_single_turn(*args, **kwargs)
        return self.after_sampling(completion_ids, logprobs)

    def _generate(self, prompts):
        with self.generation_context():
            result = list(super()._generate(prompts))
        extra = self.reward_columns()
        if extra:  # TRL passes extra_fields to the reward functions as keyword arguments
            result[EXTRA_FIELDS_INDEX] = {**result[EXTRA_FIELDS_INDEX], **extra}
        return tuple(result)

    def _generate_and_score_completions(self, inputs):
        self.before_rollouts(inputs)
        return self.after_rollouts(inputs, super()._generate_and_score_completions(inputs))

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        with self.rewards_context():
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self.after_rewards(rewards_per_func)
        return rewards_per_func

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        with self.scoring_forward_context():
            result = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        self.after_scoring_forward()
        return result

    def _compute_loss(self, model, inputs):
        return self.policy_loss(model, inputs)

    def _get_train_sampler(self, dataset=None):
        return self.prompt_sampler(super()._get_train_sampler(dataset))


def incompatibilities() -> list[str]:
    """What in the installed TRL no longer matches what this module was written against (empty: all fine)."""
    problems = []
    for name, expected in PRIVATE_METHODS.items():
        method = getattr(GRPOTrainer, name, None)
        if method is None:
            problems.append(f"GRPOTrainer.{name} is gone")
            continue
        params = list(inspect.signature(method).parameters)[1:]
        if tuple(params[: len(expected)]) != expected:
            problems.append(f"GRPOTrainer.{name}{tuple(params)} no longer starts with {expected}")
    fused = list(inspect.signature(add_fused_lm_head).parameters)
    if not {"temperature", "cast_lm_head_to_fp32", "outputs"} <= set(fused):
        problems.append(f"trl.trainer.utils.add_fused_lm_head{tuple(fused)} changed")
    returned = inspect.getsource(GRPOTrainer._generate).rstrip().splitlines()[-1]
    if "extra_fields" not in returned.split(",")[EXTRA_FIELDS_INDEX]:
        problems.append(f"GRPOTrainer._generate no longer returns extra_fields at index {EXTRA_FIELDS_INDEX}: {returned.strip()}")
    repeat = list(inspect.signature(RepeatSampler).parameters)
    if not set(REPEAT_SAMPLER_FIELDS) <= set(repeat):
        problems.append(f"trl.trainer.utils.RepeatSampler{tuple(repeat)} no longer takes {REPEAT_SAMPLER_FIELDS}")
    generate = inspect.getsource(GRPOTrainer._generate)
    if "self.vllm_generation.sync_weights()" not in generate or "_last_loaded_step" not in generate:
        problems.append("GRPOTrainer._generate no longer syncs vllm_generation before a rollout_func (adopt_vllm_engine)")
    if "vllm_importance_sampling_correction" not in inspect.getsource(GRPOTrainer._generate_and_score_completions):
        problems.append("GRPOTrainer no longer applies vllm_importance_sampling_correction (adopt_vllm_engine)")
    if "_metrics" not in inspect.getsource(GRPOTrainer.log):
        problems.append("GRPOTrainer.log no longer reads self._metrics")
    return problems
