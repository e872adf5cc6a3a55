"""Rollout engine: sampling groups of completions from a policy (see DESIGN.md)."""
