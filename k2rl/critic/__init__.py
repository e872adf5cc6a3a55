"""The critic room: the policy as a judge for the ``rubric`` reward, its closed-loop refinement (shared
weights or an adapter of its own) and the replay of labelled verdicts."""
