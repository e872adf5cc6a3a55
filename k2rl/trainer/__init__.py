"""The trainer room: one :class:`~.config.K2GRPOConfig` (TRL's GRPOConfig plus the K2 recipe's fields),
the GRPO/K2/PPO trainers built on TRL's GRPOTrainer, their losses, PTX, schedules, checkpoints and the
supervised warm start. Every private TRL name it needs goes through :mod:`._trl`."""
