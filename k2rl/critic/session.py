"""The self-critic's whole part in a run, in one object the recipe creates and attaches.

A recipe with a ``rubric`` reward gets a critic: the reward judges pairs of samples with it, the warm
start may teach the verdict format (``warm_start.critic_format_rows``), refinement either joins the
policy's loss (``shared``) or trains an adapter of the critic's own (``own``), and the run reports
what judging and refining cost. :class:`SelfCritic` holds these pieces so the recipe needs only its
methods, in phase order; without a rubric reward every method is a no-op.
"""

from __future__ import annotations

from k2rl.config import RunConfig
from k2rl.critic.adapter import OwnCriticAdapter
from k2rl.critic.format_rows import verdict_format_rows
from k2rl.critic.judge import bind_critic, wire_rubric_rewards
from k2rl.critic.refinement import CriticRefinement


class SelfCritic:
    """Built from the recipe before any model loads (rubric files are read now, so a bad path fails early)."""

    def __init__(self, config: RunConfig):
        self.config = config.critic
        self.seed = config.seed
        self.format_rows = config.warm_start.critic_format_rows
        specs = [vars(spec) for spec in config.rewards]
        self.reward_specs, self.critic, self.refinement = wire_rubric_rewards(
            specs, config.critic, config.trainer.num_generations, config.seed
        )
        self.adapter: OwnCriticAdapter | None = None

    def warm_start_rows(self, train):
        """Critic-format rows for the warm start (None when the recipe asks for none)."""
        return verdict_format_rows(train, self.reward_specs, self.format_rows, self.seed, self.config.prompt)

    def auxiliary_losses(self) -> list[CriticRefinement]:
        """Refinement as part of the policy's loss (K2 style, ``shared``); nothing for ``own``."""
        return [self.refinement] if self.refinement is not None and self.config.refine_adapter == "shared" else []

    def attach(self, trainer, tokenizer) -> None:
        """Point the critic at the trainer's live policy (or ``critic.model``); ``own`` adds its adapter."""
        if self.critic is not None:
            self.adapter = bind_critic(self.critic, self.refinement, self.config, trainer, tokenizer)

    def report(self, steps: int) -> list[str]:
        """What judging and refining cost over the run, one line each."""
        if self.critic is None:
            return []
        steps = max(steps, 1)
        lines = [f"critic: {self.critic.calls} verdicts in {self.critic.seconds:.1f}s ({self.critic.seconds / steps:.2f}s per step)"]
        if self.adapter is not None:
            lines.append(
                f"critic refinement (own adapter): {self.adapter.updates} critic steps on {self.refinement.trained_examples} "
                f"labelled verdicts, {self.adapter.seconds / steps:.2f}s per RL step; saved in adapter/critic/"
            )
        elif self.refinement is not None:
            lines.append(f"critic refinement: {self.refinement.trained_examples} labelled verdicts, "
                         f"forward {self.refinement.seconds / steps:.2f}s per step")
        return lines
