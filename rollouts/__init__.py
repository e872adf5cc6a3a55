"""Rollout engine: sampling groups of completions from a policy, multi-turn tool use in Kimi K2's
format, partial rollouts, scoring overlapped with generation, generation backends. How one batch
goes is in :mod:`k2rl.rollouts.engine`; the recipe options in the README's "The rollout engine".

    from k2rl.rollouts.engine import RolloutEngine, Limits   # TRL rollout_func
    from k2rl.rollouts.wiring import build_engine             # from a recipe's `rollout:` section
"""
