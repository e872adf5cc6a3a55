"""The critic behind the ``rubric`` reward: a causal LM that reads a comparison and answers a verdict.

By default the critic is the policy being trained, with the same weights (Kimi K2's self-critique:
the model judges its own samples, and whatever the policy learns the critic knows). The recipe binds
it to the trainer's model once the trainer exists; generation then folds the expert adapters in
(:func:`k2rl.experts.lora.merged_expert_adapters`), exactly as the policy's own sampling does, so the
critic always judges with the current adapters. ``critic.model: PATH`` loads a separate, frozen
critic instead.

The critic's assistant turn starts with ``answer_prefix`` (default ``"Verdict:"``), so even a tiny
model only has to produce the verdict word; ``max_new_tokens`` bounds what it may add. Set the prefix
to "" for a critic that should reason before it answers (and raise ``max_new_tokens``).
"""

from __future__ import annotations

import contextlib
import time

from k2rl.config import CriticConfig
from k2rl.critic.adapter import OwnCriticAdapter
from k2rl.critic.refinement import CriticRefinement
from k2rl.errors import K2RLError
from k2rl.policy.generation import greedy_completions
from k2rl.experts.lora import merged_expert_adapters
from k2rl.rewards.rubric.schema import load_rubrics

POLICY = "policy"


class PolicyCritic:
    """``judge(conversations) -> answers`` with greedy decoding on a bound model."""

    def __init__(self, max_new_tokens: int = 4, batch_size: int = 32, answer_prefix: str = "Verdict:"):
        self.max_new_tokens, self.batch_size, self.answer_prefix = max_new_tokens, batch_size, answer_prefix
        self.model = self.tokenizer = None
        self.judging = contextlib.nullcontext  # () -> context that makes the bound model the critic (own adapter on)
        self.calls = 0  # conversations judged so far
        self.seconds = 0.0  # time spent judging so far

    def bind(self, model, tokenizer, judging=None) -> PolicyCritic:
        """Judge with ``model`` from now on (the trainer's model, or a separately loaded critic).

        ``judging`` (a context-manager factory) is entered around every judgment: the own-adapter
        critic uses it to switch its adapter on (:mod:`k2rl.critic.adapter`).
        """
        self.model, self.tokenizer = model, tokenizer
        self.judging = judging or contextlib.nullcontext
        return self

    def judge(self, conversations: list[list[dict]]) -> list[str]:
        if self.model is None:
            raise RuntimeError("PolicyCritic.judge called before bind(model, tokenizer)")
        started = time.perf_counter()
        with self.judging(), merged_expert_adapters(self.model):
            answers = greedy_completions(
                self.model, self.tokenizer, conversations, self.max_new_tokens, self.batch_size,
                desc="critic", prefix=self.answer_prefix,
            )
        self.calls += len(conversations)
        self.seconds += time.perf_counter() - started
        return [self.answer_prefix + answer for answer in answers]


def wire_rubric_rewards(
    specs: list[dict], config: CriticConfig, group_size: int, seed: int
) -> tuple[list[dict], PolicyCritic | None, CriticRefinement | None]:
    """Reward specs with the critic (and refiner) bound into every ``rubric`` reward's options.

    Returns the specs unchanged and no critic when no reward is named ``rubric``. Rubric files are
    read here, so a wrong path fails before any model loads.
    """
    if not any(spec.get("name") == "rubric" for spec in specs):
        return specs, None, None
    if config.refine and config.model not in (None, POLICY):
        raise K2RLError("critic.refine trains the policy's own weights; it needs critic.model: policy")
    critic = PolicyCritic(config.max_new_tokens, config.batch_size, config.answer_prefix)
    refinement = None
    if config.refine:
        own = config.refine_adapter == "own"
        refinement = CriticRefinement(config.refine_weight, config.refine_max_examples, seed, config.answer_prefix,
                                      replay=config.refine_replay if own else 0, reservoir=config.refine_reservoir if own else 0)
    wired = []
    for spec in specs:
        if spec.get("name") == "rubric":
            options = dict(spec.get("options") or {})
            options["rubrics"] = load_rubrics(options.get("rubrics"))
            options.setdefault("pairs_per_group", config.pairs_per_group)
            options.setdefault("seed", seed)
            options.setdefault("prompt_style", config.prompt)
            options.update(critic=critic, group_size=group_size)
            if refinement is not None:
                if not options.get("verifier"):
                    raise K2RLError("critic.refine needs the rubric reward's `verifier` option (e.g. exact_answer)")
                options["refiner"] = refinement
            spec = {**spec, "options": options}
        wired.append(spec)
    return wired, critic, refinement


def bind_critic(
    critic: PolicyCritic, refinement: CriticRefinement | None, config: CriticConfig, trainer, tokenizer
) -> OwnCriticAdapter | None:
    """Point the critic at its model: the trainer's (live policy, adapters included) or ``critic.model``.

    With ``critic.refine_adapter: own`` the trainer's model gets the critic adapter, the trainer a
    callback that refines it after every step; that adapter is returned (else None).
    """
    if refinement is not None and config.refine_adapter == "own":
        adapter = OwnCriticAdapter(refinement.bind(tokenizer), config.refine_learning_rate, config.refine_steps)
        adapter.attach(trainer.model, trainer.model.peft_config[trainer.model.active_adapter], trainer.record_metric)
        trainer.add_callback(adapter)
        critic.bind(trainer.model, tokenizer, adapter.judging)
        return adapter
    if config.model in (None, POLICY):
        critic.bind(trainer.model, tokenizer)
    else:
        from k2rl.policy.build import load_policy

        separate = load_policy(config.model)
        separate.model.eval().requires_grad_(False)
        critic.bind(separate.model, separate.tokenizer)
    if refinement is not None:
        refinement.bind(tokenizer)
    return None
