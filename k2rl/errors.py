"""User-facing errors.

Anything a user can cause (a bad config key, a missing dataset column, a model path that does not
exist, a reward plugin that misbehaves) is raised as a :class:`K2RLError`. The CLI prints it as one
line and exits non-zero; a traceback is reserved for bugs in k2rl itself.
"""


class K2RLError(Exception):
    """An error caused by the user's input, reported as a single clear line."""
