"""Self-critique rubric reward: a critic compares a group's samples pairwise against rubrics.

Modules, one job each: :mod:`.schema` (rubric files and per-prompt rubrics), :mod:`.pairs` (groups and
bounded pair sampling), :mod:`.prompt` (the critic's prompt), :mod:`.verdict` (parsing answers,
abstentions), :mod:`.aggregate` (net win rates, agreement with a verifier), :mod:`.reward` (the
registered ``rubric`` reward). Nothing here imports torch: the critic that runs a model lives in
:mod:`k2rl.critic.judge`.
"""

from k2rl.rewards.rubric.reward import rubric_reward
from k2rl.rewards.rubric.schema import Criterion, Rubric, load_rubric, load_rubrics, parse_rubric

__all__ = ["Criterion", "Rubric", "load_rubric", "load_rubrics", "parse_rubric", "rubric_reward"]
