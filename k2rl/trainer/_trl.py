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
import re

import torch
from trl import GRPOTrainer
from trl.trainer.utils import RepeatSampler, add_fused_lm_head

from k2rl.trainer.losses import loss_mask

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
# GRPOTrainer attributes (set in its __init__, undocumented) that k2rl reads or sets, and who does:
# base.py (temperature, budgets, prompt sampling), algorithms.py (K2 loss), ppo.py, dynamic_sampling.py,
# rollouts/engine.py and rollouts/backends.py / vllm_sync.py (the vLLM backend).
TRAINER_ATTRIBUTES = (
    "num_generations", "num_generations_eval", "temperature", "generation_config", "generation_kwargs",
    "eos_token_ids", "use_vllm", "vllm_generation", "reward_func_names", "reward_weights", "aux_loss_enabled",
    "router_aux_loss_coef",
)
# The keyword arguments GRPOTrainer._calculate_rewards hands every reward function besides the batch's
# columns, and the private method behind each; a rollout_func that scores for TRL hands the same ones.
REWARD_KWARGS = {"trainer_state": "state", "log_extra": "_log_completion_extra", "log_metric": "_log_metric"}
EXTRA_FIELDS_INDEX = 5  # _generate returns (prompt_ids, completion_ids, tool_mask, completions, logprobs, extra_fields, ...)
UNSCORED_METRIC = "rewards/unscored"  # rows with no reward this step (counted, not averaged)


def is_count_metric(name: str) -> bool:
    """Metrics that count samples: summed over a logging window, where TRL averages the rest."""
    return name == UNSCORED_METRIC or name.endswith("/failures")


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

    def after_rewards(self, rewards_per_func, rows: list[dict]) -> None:
        """The (samples x reward functions) reward matrix TRL has just computed (all processes), and this
        process's rows it was computed for (columns a ``rollout_func`` returned already merged in)."""

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

    def reward_kwargs(self) -> dict:
        """The trainer keywords TRL passes to each reward function (``trainer_state``, ``log_metric``, ...)."""
        kwargs = {key: getattr(self, attribute) for key, attribute in REWARD_KWARGS.items()}
        if getattr(self, "environments", None) is not None:
            kwargs["environments"] = self.environments
        return kwargs

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
        self._unscored = None
        output = super()._generate_and_score_completions(inputs)
        return self.after_rollouts(inputs, self._without_unscored_loss(output))

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        with self.rewards_context():
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        rewards_per_func = self._unscore_failed_rows(rewards_per_func, len(prompts))
        self.after_rewards(rewards_per_func, inputs)
        return rewards_per_func

    # ---- rows with no reward ----------------------------------------------------------------
    # The rule: a row for which a reward failed (raised, timed out, returned garbage: the isolated
    # wrapper's ``failed_rows()``), or for which every reward returned None (an infrastructure failure,
    # a paused partial rollout), has NO reward. It is left out of its group's mean and std (TRL's
    # NaN-aware statistics do this for an all-NaN row), carries no loss (its completion mask is zeroed
    # here, so it neither adds a KL/entropy term nor dilutes the token normaliser), and is counted as
    # ``rewards/unscored``; per reward, failed samples are counted as ``rewards/<name>/failures``.
    # Without this, TRL's weighted nansum would score a row whose verifier raised with the other
    # rewards alone, as if the failed one had said 0.

    def _unscore_failed_rows(self, rewards_per_func, local_rows: int):
        device = rewards_per_func.device
        failed = torch.zeros(local_rows, len(self.reward_funcs), dtype=torch.int32, device=device)
        isolated = []
        for index, func in enumerate(self.reward_funcs):
            rows = getattr(func, "failed_rows", None)
            if callable(rows):
                isolated.append(index)
                for row in rows():
                    if row < local_rows:
                        failed[row, index] = 1
        failed = self.accelerator.gather(failed)  # rewards_per_func is already gathered across processes
        rewards_per_func = rewards_per_func.clone()
        rewards_per_func[failed.any(dim=1)] = torch.nan
        self._unscored = torch.isnan(rewards_per_func).all(dim=1)
        for index in isolated:
            self.record_metric(f"rewards/{self.reward_func_names[index]}/failures", float(failed[:, index].sum()))
        self.record_metric(UNSCORED_METRIC, float(self._unscored.sum()))
        return rewards_per_func

    def _without_unscored_loss(self, output: dict) -> dict:
        if self._unscored is None or not bool(self._unscored.any()):
            return output
        local = output["completion_mask"].size(0)
        start = self.accelerator.process_index * local
        unscored = self._unscored[start : start + local].to(output["completion_mask"].device)
        output["completion_mask"] = output["completion_mask"] * (~unscored).unsqueeze(1).to(output["completion_mask"].dtype)
        output["num_items_in_batch"] = self.accelerator.gather(loss_mask(output).sum()).sum()
        return output

    def log(self, logs, start_time=None):
        for metrics in self._metrics.values():  # counts are summed over the window, not averaged
            for name, values in metrics.items():
                if is_count_metric(name) and len(values) > 1:
                    metrics[name] = [sum(values)]
        return super().log(logs, start_time)

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
    scoring = inspect.getsource(getattr(GRPOTrainer, "_calculate_rewards", incompatibilities))
    for key, attribute in REWARD_KWARGS.items():
        if f'reward_kwargs["{key}"]' not in scoring or (attribute != "state" and not hasattr(GRPOTrainer, attribute)):
            problems.append(f"GRPOTrainer._calculate_rewards no longer passes {key} (self.{attribute}) to the rewards")
    problems += missing_attributes(inspect.getsource(GRPOTrainer.__init__))
    generate = inspect.getsource(GRPOTrainer._generate)
    if "self.vllm_generation.sync_weights()" not in generate or "_last_loaded_step" not in generate:
        problems.append("GRPOTrainer._generate no longer syncs vllm_generation before a rollout_func (adopt_vllm_engine)")
    if "vllm_importance_sampling_correction" not in inspect.getsource(GRPOTrainer._generate_and_score_completions):
        problems.append("GRPOTrainer no longer applies vllm_importance_sampling_correction (adopt_vllm_engine)")
    if "_metrics" not in inspect.getsource(GRPOTrainer.log):
        problems.append("GRPOTrainer.log no longer reads self._metrics")
    return problems


def missing_attributes(init_source: str) -> list[str]:
    """The :data:`TRAINER_ATTRIBUTES` that GRPOTrainer's ``__init__`` (its source) no longer sets."""
    return [f"GRPOTrainer no longer sets self.{name} in __init__" for name in TRAINER_ATTRIBUTES
            if not re.search(rf"self\.{name}\s*(:[^=]*)?=", init_source)]
