"""Rollout engine (see DESIGN.md): sampling groups of completions from a policy, multi-turn tool use in
Kimi K2's format, partial rollouts, scoring overlapped with generation, generation backends.

    from k2rl.rollouts.engine import RolloutEngine, Limits   # TRL rollout_func
    from k2rl.rollouts.wiring import build_engine             # from a recipe's `rollout:` section
"""
