"""Prioritized (K1.5) and curriculum prompt sampling: a drop-in for TRL's ``RepeatSampler``.

TRL's dataloader takes its order from a ``RepeatSampler``: chunks of ``batch_size`` distinct prompts
(one generation round, all processes together), each index repeated ``mini_repeat_count`` times (the
group) and each chunk ``repeat_count`` times (reuse over iterations); every process walks the same
sequence and keeps its own slice. :class:`PromptSampler` yields the same layout but picks each chunk's
prompts by weight:

- ``prioritized``: weight ``max(floor, 1 - s_i)``, ``s_i`` prompt i's running success rate;
- ``curriculum``: uniform over the easiest part of the data by a difficulty column, a part that grows
  from ``start_fraction`` to everything over ``curriculum_steps`` rounds.

**Same draws everywhere.** Chunk k is drawn with a generator seeded by (seed, k) from the success
rates of rounds up to k - 2 only. Every process sees the same (gathered) rewards, so every process
holds the same rates and draws the same chunk; and the draw does not depend on *when* the dataloader
asks for it (accelerate prefetches a batch, so chunk k + 1 is drawn before round k's rewards exist).

**Which prompt.** The training rows carry their dataset index (:data:`PROMPT_INDEX`,
:func:`with_prompt_index`), and :meth:`PromptSampler.observe` credits each sample's success to the
prompt its row names, whatever order the rows come back in.

**Resume.** The state (rates, the last round's update, rounds observed) goes into every checkpoint
(:class:`SamplerCheckpoint`). A resumed run redraws chunk k from exactly what the uninterrupted run
drew it from; the chunks the HF Trainer skips on resume are yielded as placeholders, never drawn.
Exact for ``num_iterations: 1`` (a checkpoint then always falls between rounds).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from torch.utils.data import Sampler
from transformers import TrainerCallback

from k2rl.config.rl_data import SamplingConfig
from k2rl.errors import K2RLError

STATE_FILE = "prompt_sampler.json"
PROMPT_INDEX = "k2rl_prompt_index"  # a column of the training rows: which prompt a sample answers
LAG = 2  # chunk k is drawn from the success rates of rounds <= k - LAG


class PromptSampler(Sampler[int]):
    """RepeatSampler's layout with weighted chunks; :meth:`observe` feeds it each round's successes."""

    def __init__(self, num_prompts: int, mini_repeat_count: int, batch_size: int, repeat_count: int, seed: int,
                 config: SamplingConfig, difficulty: list[float] | None = None, total_rounds: int | None = None):
        if batch_size > num_prompts:
            raise K2RLError(f"trainer.sampling: a round needs {batch_size} distinct prompts, the data has {num_prompts}")
        self.num_prompts, self.mini_repeat_count, self.batch_size = num_prompts, mini_repeat_count, batch_size
        self.repeat_count, self.seed, self.config = repeat_count, seed, config
        if config.method == "curriculum":
            if difficulty is None or len(difficulty) != num_prompts:
                raise K2RLError(f"trainer.sampling: curriculum needs the column {config.difficulty_column!r} for every prompt")
            self.easy_first = sorted(range(num_prompts), key=lambda i: (float(difficulty[i]), i))
        self.total_rounds = config.curriculum_steps or total_rounds or 1
        self.chunks_per_epoch = num_prompts // batch_size
        self.success: dict[int, float] = {}  # rounds <= observed - LAG, folded
        self.pending: list[list] = []  # [index, rate] of the last LAG - 1 observed rounds, oldest first
        self.observed = 0  # rounds whose successes arrived
        self.epoch = 0
        self._drawn: dict[int, list[int]] = {}  # chunk -> indices, until its round is observed

    def __len__(self) -> int:
        return self.chunks_per_epoch * self.batch_size * self.mini_repeat_count * self.repeat_count

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        for j in range(self.chunks_per_epoch):
            k = epoch * self.chunks_per_epoch + j
            chunk = self.chunk(k) if k >= self.observed else [0] * self.batch_size  # skipped on resume
            for _ in range(self.repeat_count):
                for index in chunk:
                    yield from [index] * self.mini_repeat_count

    # ---- the draw --------------------------------------------------------------------------

    def rates_for(self, k: int) -> dict[int, float]:
        """Success rates as they stood after round k - LAG (what chunk k is drawn from)."""
        usable = k - LAG + 1 - (self.observed - len(self.pending))  # pending rounds that chunk k may see
        if usable > len(self.pending):
            raise RuntimeError(f"prompt sampler: chunk {k} requested before round {k - LAG} was observed")
        rates = dict(self.success)
        for update in self.pending[: max(usable, 0)]:
            _fold(rates, update, self.config.decay)
        return rates

    def probabilities(self, k: int) -> list[float]:
        """Each prompt's probability of being drawn first in chunk k."""
        if self.config.method == "prioritized":
            rates = self.rates_for(k)
            weights = [max(self.config.floor, 1.0 - rates.get(i, 0.0)) for i in range(self.num_prompts)]
        else:
            fraction = self.config.start_fraction + (1 - self.config.start_fraction) * min(1.0, k / self.total_rounds)
            pool = max(self.batch_size, math.ceil(fraction * self.num_prompts))
            weights = [0.0] * self.num_prompts
            for i in self.easy_first[:pool]:
                weights[i] = 1.0
        total = sum(weights)
        return [w / total for w in weights]

    def chunk(self, k: int) -> list[int]:
        """The distinct prompts of round k (weighted sampling without replacement, Efraimidis-Spirakis)."""
        if k not in self._drawn:
            rng = random.Random(f"{self.seed}:{k}")
            keys = [(math.log(rng.random() or 1e-300) / p if p > 0 else -math.inf, i)
                    for i, p in enumerate(self.probabilities(k))]
            keys.sort(key=lambda pair: (-pair[0], pair[1]))
            self._drawn[k] = [i for _, i in keys[: self.batch_size]]
        return self._drawn[k]

    # ---- updates and state -------------------------------------------------------------------

    def observe(self, successes: list[float | None], prompts: list[int]) -> None:
        """The next round's per-sample successes (1/0, None unscored) and the prompt each sample answers.

        The prompts are read from the rows, not assumed in the chunk's order: with partial rollouts a
        round's rows include groups carried over from earlier rounds (and leave out ones still paused).
        """
        chunk = self._drawn.pop(self.observed, None)
        if chunk is None:
            raise RuntimeError(f"prompt sampler: round {self.observed} was observed but never drawn")
        if len(successes) != len(prompts):
            raise RuntimeError(f"prompt sampler: {len(successes)} rewards for {len(prompts)} prompts")
        scored: dict[int, list[float]] = {}
        for index, success in zip(prompts, successes):
            if success is not None:
                scored.setdefault(int(index), []).append(success)
        update = [[index, sum(values) / len(values)] for index, values in scored.items()]
        self.pending.append(update)
        self.observed += 1
        while len(self.pending) > LAG - 1:
            _fold(self.success, self.pending.pop(0), self.config.decay)

    def state_dict(self) -> dict:
        return {"success": {str(i): s for i, s in self.success.items()}, "pending": self.pending,
                "observed": self.observed}

    def load_state_dict(self, state: dict) -> None:
        self.success = {int(i): float(s) for i, s in state["success"].items()}
        self.pending = [[[int(i), float(r)] for i, r in update] for update in state["pending"]]
        self.observed = int(state["observed"])
        self.epoch = self.observed // self.chunks_per_epoch
        self._drawn = {}


def _fold(rates: dict[int, float], update: list, decay: float) -> None:
    for index, rate in update:
        rates[index] = rate if index not in rates else decay * rates[index] + (1 - decay) * rate


class SamplerCheckpoint(TrainerCallback):
    """Writes the sampler's state into each checkpoint and restores it when a run resumes."""

    def __init__(self, sampler_of):
        self.sampler_of = sampler_of  # () -> PromptSampler | None (built with TRL's dataloader)

    def on_train_begin(self, args, state, control, **kwargs):
        sampler = self.sampler_of()
        if sampler is not None and state.global_step > 0:  # the HF Trainer has loaded the resumed state
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE_FILE
            if not path.is_file():
                raise K2RLError(f"{path.parent} has no {STATE_FILE}; resume with the trainer.sampling it was started with")
            sampler.load_state_dict(json.loads(path.read_text()))

    def on_save(self, args, state, control, **kwargs):
        sampler, checkpoint = self.sampler_of(), Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if sampler is not None and checkpoint.is_dir() and state.is_world_process_zero:
            (checkpoint / STATE_FILE).write_text(json.dumps(sampler.state_dict()))


def with_prompt_index(dataset):
    """``dataset`` with each row's own index as the :data:`PROMPT_INDEX` column (kept if already there)."""
    if PROMPT_INDEX in dataset.column_names:
        return dataset
    return dataset.add_column(PROMPT_INDEX, list(range(len(dataset))))


def sampling_config(settings: dict) -> SamplingConfig:
    """The ``trainer.sampling`` section from K2GRPOConfig's plain ``sampling`` field."""
    return SamplingConfig(**settings)


def prompt_sampler(default, dataset, config: SamplingConfig, total_rounds: int) -> PromptSampler:
    """A :class:`PromptSampler` laid out like TRL's ``default`` RepeatSampler, over ``dataset``."""
    difficulty = None
    if config.method == "curriculum":
        if config.difficulty_column not in dataset.column_names:
            raise K2RLError(f"trainer.sampling: curriculum needs a {config.difficulty_column!r} column "
                            f"(data.filter writes one); the dataset has {dataset.column_names}")
        difficulty = list(dataset[config.difficulty_column])
    return PromptSampler(len(dataset), default.mini_repeat_count, default.batch_size, default.repeat_count,
                         default.seed or 0, config, difficulty, total_rounds)


def round_successes(rewards_per_func, reward_names: list[str], config: SamplingConfig) -> list[float | None]:
    """Per sample: 1.0 if the success reward reached the threshold, 0.0 if not, None if it gave no score."""
    name = config.success_reward or reward_names[0]
    if name not in reward_names:
        raise K2RLError(f"trainer.sampling.success_reward {name!r} is not one of the rewards {reward_names}")
    column = rewards_per_func[:, reward_names.index(name)].tolist()
    return [None if math.isnan(v) else float(v >= config.success_threshold) for v in column]
