"""K2's difficulty filter (``data.filter``): keep the RL prompts the warm-started policy solves sometimes.

A prompt the policy always or never solves gives every sample of its GRPO group the same reward, so
no signal, only rollout cost. Before RL, the policy samples ``pass_k`` answers per training prompt
(at the RL sampling temperature and completion length, batched, expert adapters merged where there
are any); the recipe's *first* reward function scores them, and a pass is its full score (>= 1, the
rule held-out accuracy uses: :func:`k2rl.run.evaluation.full_scores`), a failed score counting as a
miss. The first reward is the one recipes put their correctness check in; format or length shaping
rewards that come after it do not decide what "solved" means. Prompts with a pass rate in
[``min``, ``max``] (both inclusive) are kept.

The result goes to the run directory: ``difficulty.jsonl`` (one line per training prompt: its ``id``
-- the dataset's ``id`` column, else the row index -- its pass rate and k) and
``difficulty.png`` (a histogram with the bounds). A resumed run reads ``difficulty.jsonl`` back
instead of sampling again, so it trains on the same prompts.
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets import Dataset

from k2rl.errors import K2RLError
from k2rl.layout import RunLayout
from k2rl.experts.lora import merged_expert_adapters
from k2rl.distributed import from_main
from k2rl.policy.generation import sampled_completions
from k2rl.run.evaluation import full_scores
from k2rl.run.phases import say

DIFFICULTY_FILE = RunLayout(Path()).difficulty.name
HISTOGRAM_FILE = RunLayout(Path()).difficulty_plot.name


def prompt_ids(dataset: Dataset) -> list:
    return list(dataset["id"]) if "id" in dataset.column_names else list(range(len(dataset)))


def pass_rates(model, tokenizer, dataset: Dataset, reward, k: int, temperature: float, max_new_tokens: int,
               batch_size: int, seed: int) -> list[float]:
    """Per row of ``dataset``: the share of ``k`` sampled answers that get ``reward``'s full score."""
    with merged_expert_adapters(model):
        groups = sampled_completions(model, tokenizer, list(dataset["prompt"]), max_new_tokens, batch_size, k,
                                     temperature, seed)
    prompts = [p for p in dataset["prompt"] for _ in range(k)]
    texts = [text for group in groups for text in group]
    columns = {c: [v for v in dataset[c] for _ in range(k)] for c in dataset.column_names if c != "prompt"}
    completions = [[{"role": "assistant", "content": t}] for t in texts]  # conversational, as TRL hands them
    passed = full_scores(reward(prompts=prompts, completions=completions, **columns))
    return [sum(passed[i * k : (i + 1) * k]) / k for i in range(len(dataset))]


def kept_rows(rates: list[float], low: float, high: float) -> list[int]:
    """Indices of the rows whose pass rate lies in [low, high], both ends included."""
    return [i for i, rate in enumerate(rates) if low <= rate <= high]


def write_difficulty(run_dir: Path, ids: list, rates: list[float], k: int) -> None:
    lines = (json.dumps({"id": i, "pass_rate": r, "k": k}) for i, r in zip(ids, rates, strict=True))
    RunLayout(run_dir).difficulty.write_text("\n".join(lines) + "\n")


def read_difficulty(run_dir: Path, ids: list, k: int) -> list[float] | None:
    """The cached pass rates, or None when there are none for these prompts and this k."""
    path = RunLayout(run_dir).difficulty
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if [r["id"] for r in records] != ids or any(r["k"] != k for r in records):
        return None
    return [r["pass_rate"] for r in records]


def plot_difficulty(rates: list[float], k: int, low: float, high: float, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    edges = [(j - 0.5) / k for j in range(k + 2)]  # one bar per possible pass count 0..k
    ax.hist(rates, bins=edges, color="tab:blue", edgecolor="white")
    for bound in (low, high):
        ax.axvline(bound, color="tab:red", linestyle="--")
    ax.set_xlabel(f"pass rate (pass@{k} samples of the warm-started policy)")
    ax.set_ylabel("training prompts")
    ax.set_title(f"k2rl difficulty filter: keep [{low:g}, {high:g}]")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def difficulty_filter_phase(run, model, tokenizer, train: Dataset, reward_funcs: list) -> Dataset:
    """The training prompts RL samples from: all of them, or (``data.filter``) those of moderate difficulty."""
    config = run.config
    spec = config.data.filter
    if spec is None:
        return train
    ids = prompt_ids(train)

    def measure() -> list[float]:
        cached = read_difficulty(run.dir, ids, spec.pass_k)
        if cached is not None:
            return cached
        rates = pass_rates(model, tokenizer, train, reward_funcs[0], spec.pass_k, config.trainer.temperature,
                           config.trainer.max_completion_length, config.eval.batch_size, config.seed)
        write_difficulty(run.dir, ids, rates, spec.pass_k)
        plot_difficulty(rates, spec.pass_k, spec.min, spec.max, RunLayout(run.dir).difficulty_plot)
        return rates

    rates = from_main(measure)
    keep = kept_rows(rates, spec.min, spec.max)
    say(f"difficulty filter (pass@{spec.pass_k} in [{spec.min:g}, {spec.max:g}]): kept {len(keep)} of {len(rates)} "
        f"prompts, dropped {len(rates) - len(keep)} ({DIFFICULTY_FILE}, {HISTOGRAM_FILE})")
    if not keep:
        raise K2RLError(f"data.filter kept no training prompts (pass rates in {DIFFICULTY_FILE}); widen min/max")
    return train.select(keep)
