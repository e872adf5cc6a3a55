"""DAPO's dynamic sampling: replace zero-variance groups by groups of fresh prompts before the loss.

A group whose rewards are all equal has zero advantage everywhere, so it adds nothing to the GRPO
gradient but dilutes the batch (TRL only logs the share, ``frac_reward_zero_std``). After TRL has
scored a batch, :func:`refill` finds this process's zero-variance groups, rolls out as many groups of
fresh prompts (drawn from the training set by a generator fixed by seed, step, round and process)
through TRL's whole rollout step again, and puts fresh groups that do have variance in their place;
up to ``max_rounds`` rounds. Every process runs the same number of rounds (the decision is gathered),
since TRL's reward step gathers across processes. Logged: ``dynamic_sampling/dropped`` (groups
replaced), ``dynamic_sampling/left`` (zero-variance groups still there when the cap was reached) and
``dynamic_sampling/extra_s`` (the extra generation time). Refill rounds do not update the prompt sampler.
"""

from __future__ import annotations

import random
import time

import torch
import torch.nn.functional as F

from k2rl.trainer.losses import loss_mask

LEFT_PADDED = ("prompt_ids", "prompt_mask")  # TRL pads prompts on the left, completions on the right


def zero_variance_groups(advantages: torch.Tensor, group_size: int) -> list[int]:
    """Groups (of ``group_size`` consecutive rows) whose advantages are all zero."""
    return [g for g, row in enumerate(advantages.view(-1, group_size)) if bool((row == 0).all())]


def _rows(value: torch.Tensor, rows: list[int]) -> torch.Tensor:
    return value[torch.tensor(rows, dtype=torch.long, device=value.device)]


def _pad_to(value: torch.Tensor, width: int, left: bool, fill) -> torch.Tensor:
    missing = width - value.size(1)
    return value if missing <= 0 else F.pad(value, (missing, 0) if left else (0, missing), value=fill)


def splice(output: dict, fresh: dict, targets: list[int], sources: list[int], group_size: int, pad_token_id: int) -> dict:
    """``output`` with its groups ``targets`` replaced by ``fresh``'s groups ``sources`` (padding widened)."""
    n = output["advantages"].size(0)
    take = [g * group_size + i for g in sources for i in range(group_size)]
    put = [g * group_size + i for g in targets for i in range(group_size)]
    spliced = dict(output)
    for key, value in output.items():
        if not (isinstance(value, torch.Tensor) and value.dim() >= 1 and value.size(0) == n and key in fresh):
            continue
        new = fresh[key]
        if value.dim() == 2:
            fill = pad_token_id if key == "prompt_ids" else 0
            width = max(value.size(1), new.size(1))
            value, new = (_pad_to(v, width, key in LEFT_PADDED, fill) for v in (value, new))
        value = value.clone()
        value[torch.tensor(put, dtype=torch.long, device=value.device)] = _rows(new, take).to(value.dtype)
        spliced[key] = value
    return spliced


def fresh_rows(dataset, groups: int, group_size: int, key: str) -> list[dict]:
    """``groups`` random training prompts (a generator fixed by ``key``), each repeated ``group_size`` times."""
    rng = random.Random(key)
    picks = [rng.randrange(len(dataset)) for _ in range(groups)]
    return [dict(dataset[i]) for i in picks for _ in range(group_size)]


def refill(trainer, output: dict, max_rounds: int) -> dict:
    """``output`` (TRL's scored batch, this process's part) with zero-variance groups replaced (see module)."""
    group_size = trainer.num_generations
    started, dropped, rounds = time.perf_counter(), 0, 0
    zero = zero_variance_groups(output["advantages"], group_size)
    while rounds < max_rounds:
        wanted = int(trainer.accelerator.gather(torch.tensor([len(zero)], device=output["advantages"].device)).max())
        if wanted == 0:
            break
        rounds += 1
        key = f"{trainer.args.seed}:{trainer.state.global_step}:{rounds}:{trainer.accelerator.process_index}"
        fresh = trainer.refill_rollouts(fresh_rows(trainer.train_dataset, wanted, group_size, key))
        useful = [g for g in range(wanted) if g not in set(zero_variance_groups(fresh["advantages"], group_size))]
        targets, sources = zero[: len(useful)], useful[: len(zero)]
        if targets:
            output = splice(output, fresh, targets, sources, group_size, trainer.processing_class.pad_token_id)
        dropped += len(targets)
        zero = zero[len(targets):]
    if rounds:  # the loss normalizes by the batch's completion tokens: count them again (all processes)
        output["num_items_in_batch"] = trainer.accelerator.gather(loss_mask(output).sum()).sum()
    trainer.record_metric("dynamic_sampling/dropped", float(dropped))
    trainer.record_metric("dynamic_sampling/left", float(len(zero)))
    trainer.record_metric("dynamic_sampling/extra_s", time.perf_counter() - started if rounds else 0.0)
    return output
