"""Critic agreement with the verifier on held-out pairs: the critic before RL vs after, one fixed pair set.

    OMP_NUM_THREADS=2 python benchmarks/critic_agreement.py RUN_DIR [--prompts 48] [--samples 8] [--max-pairs 96]

RUN_DIR is a finished ``k2rl train`` run of a recipe with the ``rubric`` reward (e.g.
configs/rubric_mix.yaml). The starting policy (``warm_start/``, or the recipe's ``policy.model``)
samples ``--samples`` answers to each held-out prompt once; ``exact_answer`` labels them; every pair
where exactly one passed becomes two comparisons (both orders) on the core rubric. The same
comparisons are judged by the critic before RL (the starting policy) and after (starting policy plus
the run's ``adapter/``, the policy as critic; plus ``adapter/critic/`` when the run refined an
own critic adapter). Prints agreement, the share of decided verdicts and
agreement among decided, for both, and the after/before ratio.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch
import yaml
from peft import PeftModel

from k2rl.config import DataConfig
from k2rl.critic import PolicyCritic
from k2rl.critic_adapter import CRITIC_ADAPTER
from k2rl.data import load_task_data
from k2rl.policy import load_policy
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


def judge(critic, comparisons_plan, conversations, passed):
    answers = critic.judge(conversations)
    comparisons = [Comparison(a, b, 0, 1.0, parse_verdict(t)) for (a, b), t in zip(comparisons_plan, answers)]
    return agreement(comparisons, passed, {0})


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
    rubric = load_rubric(Path(__file__).resolve().parents[1] / "configs" / "rubrics" / "core.yaml")
    plan = [order for w, l in labels for order in ((w, l), (l, w))]
    critic_cfg = recipe.get("critic", {})
    style = critic_cfg.get("prompt", "full")
    conversations = [critic_messages(flat_prompts[a], completions[a], completions[b], rubric, style) for a, b in plan]
    critic = PolicyCritic(critic_cfg.get("max_new_tokens", 4), 32, critic_cfg.get("answer_prefix", "Verdict:"))
    print(f"pass rate {sum(passed) / len(passed):.3f}; {len(labels)} labelled pairs, {len(plan)} comparisons")
    before = judge(critic.bind(model, tokenizer), plan, conversations, passed)
    after_model = PeftModel.from_pretrained(model, str(args.run_dir / "adapter")).eval()
    own = args.run_dir / "adapter" / CRITIC_ADAPTER  # critic.refine_adapter: own -- the critic is policy + its delta
    if own.is_dir():
        after_model.load_adapter(str(own), adapter_name=CRITIC_ADAPTER)
        after_model.base_model.set_adapter(["default", CRITIC_ADAPTER])
        print("after RL the critic is the policy's adapter plus the critic's own (adapter/critic/)")
    after = judge(critic.bind(after_model, tokenizer), plan, conversations, passed)
    for name, a in (("before RL", before), ("after RL", after)):
        decided = a.decided / a.labelled
        among = f"{a.decided_rate:.3f}" if a.decided else "n/a"
        print(f"{name:9s}: agreement {a.rate:.3f}  decided {decided:.3f}  agreement among decided {among}")
    print(f"ratio after/before agreement: {after.rate / before.rate:.2f}" if before.rate else
          f"before RL agreement is 0; after: {after.rate:.3f}")


if __name__ == "__main__":
    main()
