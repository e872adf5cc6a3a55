"""Which rewards a held-out evaluation scores with, resolved from the recipe alone.

Apart from :mod:`.evaluation` (which imports the model stack) so that a misnamed evaluation reward
is reported before torch loads (:mod:`.recipe_checks`).
"""

from __future__ import annotations

from k2rl.config import RewardSpec, RunConfig
from k2rl.errors import K2RLError
from k2rl.rewards import get_reward
from k2rl.rewards.import_path import default_label
from k2rl.rewards.isolation import default_timeout, isolate

# Rewards that compare the completions of one group: a greedy evaluation has one completion per prompt.
GROUP_REWARDS = frozenset({"rubric", "k1.5_length"})


def eval_reward_specs(config: RunConfig) -> list[tuple[str, RewardSpec]]:
    """(label, spec) of each evaluation reward: a recipe reward by label or name, else a registered name."""
    by_label = {spec.label or default_label(spec.name): spec for spec in config.rewards}
    by_name = {spec.name: spec for spec in reversed(config.rewards)}  # the first of a name wins
    names = config.eval.rewards
    if names is None:
        names = [label for label, spec in by_label.items() if spec.name not in GROUP_REWARDS]
    chosen = []
    for name in names:
        spec = by_label.get(name) or by_name.get(name) or RewardSpec(name=name)
        if spec.name in GROUP_REWARDS:
            raise K2RLError(f"eval.rewards: {name} compares the completions of a group; a held-out evaluation "
                            "scores one completion per prompt")
        chosen.append((name, spec))
    if not chosen:
        raise K2RLError("eval.rewards: nothing to evaluate with (the recipe's rewards are group-relative); "
                        "name one, e.g. eval.rewards=[exact_answer]")
    return chosen


def eval_rewards(config: RunConfig) -> list[tuple[str, object]]:
    """(label, reward function) for each evaluation reward; an unknown name or option fails here.

    Each is isolated as in training, except that failures never stop an evaluation: a failed score is
    ``None`` and reported as unscored (training's own failure bound stops a run whose reward is broken).
    """
    rewards = []
    for label, spec in eval_reward_specs(config):
        fn = get_reward(spec.name, **spec.options)
        rewards.append((label, isolate(fn, f"eval/{label}", timeout_s=spec.timeout_s or default_timeout(fn),
                                       max_failure_fraction=1.0)))
    return rewards
