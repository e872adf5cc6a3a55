"""Generation speed with expert LoRA adapters, as a ratio to the base model, measured in one run.

    OMP_NUM_THREADS=2 python benchmarks/generation_expert_lora.py [--batch 32] [--new-tokens 32] [--repeats 5]

Three ways to generate the same greedy tokens from the tiny K2 policy:
  base      the policy without adapters (the baseline),
  peft      PEFT's default path: every forward rebuilds every expert's LoRA delta,
  merged    k2rl's path: adapters folded into the expert tensors once per generate call.
Prints median seconds and the ratios peft/base and merged/base (target: merged <= 1.5x).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch
from peft import get_peft_model

from k2rl.experts.lora import expert_lora_config, merged_expert_adapters
from k2rl.policy.build import init_policy, load_policy


def timed_generate(model, inputs, new_tokens: int, repeats: int) -> tuple[float, torch.Tensor]:
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        output = model.generate(**inputs, **kwargs)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            output = model.generate(**inputs, **kwargs)
            times.append(time.perf_counter() - start)
    return statistics.median(times), output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--targets", default="routed_experts,shared_experts")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        policy = load_policy(str(init_policy("k2-tiny", tmp)))
    tokenizer, base = policy.tokenizer, policy.model.eval()
    prompts = [[{"role": "user", "content": f"What is {i} + {2 * i + 1}?"}] for i in range(args.batch)]
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)

    adapted = get_peft_model(copy.deepcopy(base), expert_lora_config(base, args.targets.split(","), r=8, alpha=16)).eval()
    torch.manual_seed(0)
    for name, param in adapted.named_parameters():
        if "lora_B" in name:  # a trained adapter, not PEFT's zero initialisation
            torch.nn.init.normal_(param, std=0.02)

    t_base, _ = timed_generate(base, inputs, args.new_tokens, args.repeats)
    t_peft, out_peft = timed_generate(adapted, inputs, args.new_tokens, args.repeats)
    with merged_expert_adapters(adapted):
        t_merged, out_merged = timed_generate(adapted, inputs, args.new_tokens, args.repeats)
    # What the trainer pays: the merge happens once per generate call, so time it inside the loop too.
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        with merged_expert_adapters(adapted), torch.no_grad():
            adapted.generate(**inputs, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)
        times.append(time.perf_counter() - start)
    t_merge_each = statistics.median(times)

    print(f"batch={args.batch} new_tokens={args.new_tokens} repeats={args.repeats} threads={torch.get_num_threads()}")
    print(f"base            {t_base:.3f}s  1.00x")
    print(f"peft (default)  {t_peft:.3f}s  {t_peft / t_base:.2f}x")
    print(f"merged          {t_merged:.3f}s  {t_merged / t_base:.2f}x")
    print(f"merged+merge    {t_merge_each:.3f}s  {t_merge_each / t_base:.2f}x   (merge paid per generate call)")
    print(f"same greedy tokens as the unmerged adapter: {torch.equal(out_peft, out_merged)}")


if __name__ == "__main__":
    main()
