"""Critic agreement with the verifier on held-out pairs: the critic before RL vs after, one fixed pair set.

    OMP_NUM_THREADS=2 python benchmarks/critic_agreement.py RUN_DIR [--prompts 48] [--samples 8] [--max-pairs 96]

RUN_DIR is a finished ``k2rl train`` run of a recipe with the ``rubric`` reward (e.g.
configs/rubric_mix.yaml). The starting policy (``warm_start/``, or the recipe's ``policy.model``)
samples ``--samples`` answers to each held-out prompt once; ``exact_answer`` labels them; every pair
where exactly one passed becomes two comparisons (both orders) on the core rubric. The same
comparisons are judged by the critic before RL (the starting policy) and after (starting policy plus
the run's ``adapter/``, the policy as critic; plus ``adapter/critic/`` when the run refined an
own critic adapter), and with every checkpoint the run kept (``rl_tmp/checkpoint-N``, with
``trainer.save_steps``). Prints agreement, the share of decided verdicts and agreement among decided
for each, split by the styles the pair shows (worked vs bare answers), and the after/before ratio.
"""

from __future__ import annotations

import argparse
import sys
import random
from pathlib import Path

import torch
import yaml
from peft import PeftModel

from k2rl.config import DataConfig
from k2rl.critic.judge import PolicyCritic
from k2rl.critic.adapter import CRITIC_ADAPTER
from k2rl.data.sources import load_task_data
from k2rl.policy.build import load_policy
from k2rl.rewards import get_reward
from k2rl.rewards.rubric import load_rubric
from k2rl.rewards.rubric.aggregate import Comparison, agreement, preference_labels
from k2rl.rewards.rubric.prompt import critic_messages
from k2rl.rewards.rubric.verdict import parse_verdict


@torch.no_grad()
def sample(model, tokenizer, prompts, n, max_new_tokens, seed):
    torch.manual_seed(seed)
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, do_sample=True, temperature=1.0, max_new_tokens=max_new_tokens, num_return_sequences=n,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def judge(critic, comparisons_plan, conversations):
    answers = critic.judge(conversations)
    return [Comparison(a, b, 0, 1.0, parse_verdict(t)) for (a, b), t in zip(comparisons_plan, answers)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-pairs", type=int, default=96)
    args = parser.parse_args()
    recipe = yaml.safe_load((args.run_dir / "config.yaml").read_text())
    base = args.run_dir / "warm_start" if (args.run_dir / "warm_start").is_dir() else recipe["policy"]["model"]
    policy = load_policy(str(base))
    model, tokenizer = policy.model.eval(), policy.tokenizer
    data = load_task_data(DataConfig(**{**recipe["data"], "eval_size": args.prompts}), recipe["seed"])
    prompts = list(data.eval["prompt"])
    completions = sample(model, tokenizer, prompts, args.samples, recipe["trainer"]["max_completion_length"], seed=1)
    flat_prompts = [p for p in prompts for _ in range(args.samples)]
    answers = [a for a in data.eval["answer"] for _ in range(args.samples)]
    passed = [s >= 1.0 for s in get_reward("exact_answer")(prompts=flat_prompts, completions=completions, answer=answers)]
    groups = [list(range(i, i + args.samples)) for i in range(0, len(completions), args.samples)]
    labels = preference_labels(groups, passed)
    random.Random(0).shuffle(labels)
    labels = labels[: args.max_pairs]
    if not labels:  # agreement with a verifier needs pairs where exactly one answer passed
        print(f"pass rate {sum(passed) / len(passed):.3f}; no pair could be labelled (every group of samples "
              "all passed or all failed): nothing to measure; raise --prompts or --samples")
        return 1
    rubric = load_rubric(Path(__file__).resolve().parents[1] / "configs" / "rubrics" / "core.yaml")
    plan = [order for w, l in labels for order in ((w, l), (l, w))]
    critic_cfg = recipe.get("critic", {})
    style = critic_cfg.get("prompt", "full")
    conversations = [critic_messages(flat_prompts[a], completions[a], completions[b], rubric, style) for a, b in plan]
    critic = PolicyCritic(critic_cfg.get("max_new_tokens", 4), 32, critic_cfg.get("answer_prefix", "Verdict:"))
    print(f"pass rate {sum(passed) / len(passed):.3f}; {len(labels)} labelled pairs, {len(plan)} comparisons")
    kinds = [_pair_kind(completions[a], completions[b]) for a, b in plan]
    print("comparisons by style: " + ", ".join(f"{k} {kinds.count(k)}" for k in KINDS))
    results = []
    peft_model = None
    for i, (name, adapter_dir) in enumerate(_snapshots(args.run_dir, recipe["trainer"]["max_steps"])):
        if adapter_dir is None:
            judged_by = model
        else:
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=f"policy{i}").eval()
            else:
                peft_model.load_adapter(str(adapter_dir), adapter_name=f"policy{i}")
            active = [f"policy{i}"]
            if (adapter_dir / CRITIC_ADAPTER).is_dir():  # critic.refine_adapter: own -- the critic is policy + its delta
                peft_model.load_adapter(str(adapter_dir / CRITIC_ADAPTER), adapter_name=f"critic{i}")
                active.append(f"critic{i}")
            peft_model.base_model.set_adapter(active)
            judged_by = peft_model
        results.append((name, judge(critic.bind(judged_by, tokenizer), plan, conversations)))
    print(f"{'critic':20s} {'agreement':>9s} {'decided':>8s} {'among decided':>14s}   " + "   ".join(f"{k:>13s}" for k in KINDS))
    overall_rates = []
    for name, comparisons in results:
        overall = agreement(comparisons, passed, {0})
        overall_rates.append(overall.rate)
        by_kind = [agreement([c for c, k in zip(comparisons, kinds) if k == kind], passed, {0}) for kind in KINDS]
        among = f"{overall.decided_rate:.3f}" if overall.decided else "n/a"
        print(f"{name:20s} {overall.rate:9.3f} {overall.decided / overall.labelled:8.3f} {among:>14s}   "
              + "   ".join(f"{a.rate:13.3f}" if a.labelled else f"{'-':>13s}" for a in by_kind))
    before, after = overall_rates[0], overall_rates[-1]
    print(f"ratio after/before agreement: {after / before:.2f}" if before else f"before RL agreement is 0; after: {after:.3f}")
    return 0


KINDS = ("worked vs bare", "both worked", "both bare")


def _pair_kind(a: str, b: str) -> str:
    """Which answer styles a comparison shows: a worked answer writes its steps as equations."""
    worked = ("=" in a) + ("=" in b)
    return KINDS[{1: 0, 2: 1, 0: 2}[worked]]


def _snapshots(run_dir: Path, last_step: int) -> list[tuple[str, Path | None]]:
    """The critics to judge with: the starting policy, each checkpoint before the last step, the final adapters."""
    steps = sorted(int(c.name.split("-")[1]) for c in (run_dir / "rl_tmp").glob("checkpoint-*"))
    middle = [(f"step {step}", run_dir / "rl_tmp" / f"checkpoint-{step}") for step in steps if step < last_step]
    return [("before RL", None)] + middle + [(f"after RL (step {last_step})", run_dir / "adapter")]

if __name__ == "__main__":
    sys.exit(main())
