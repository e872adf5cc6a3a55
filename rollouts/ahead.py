"""Rollouts one step ahead of the update (``rollout.max_staleness: 1``): vLLM samples step t+1's groups
while the trainer updates on step t's.

TRL asks its ``rollout_func`` for a batch and waits; with this wrapper each call returns the batch
started in the previous call and starts the current one in the background, on the engine process, so
generation overlaps the loss, backward and optimizer step. The price is one step of staleness: a
batch is sampled with the weights from before the step that trains on it. TRL's importance-sampling
correction (on with ``rollout.backend: vllm``) compares the sampling log-probabilities with the
policy's at training time, so it corrects for exactly that lag, token by token.

Because a returned batch is the one started a call earlier, its rows are not the rows TRL passed in
this call: the rows' rewards are computed by the engine from their own columns, so they stay right,
but features that tie a batch to TRL's rows (prompt samplers, dynamic sampling, partial rollouts) are
refused with it. A reward's logging keywords (``log_metric``, ``log_extra``) are recorded while its batch
is scored in the background and replayed on the training thread when the batch is returned, so they
land in the step that trains on those rows, never in the middle of TRL's own logging. The first call has nothing in flight: it samples its batch synchronously and starts
the same rows again, so the second step trains on a second sample of the first prompts.
Synchronous (the default, as K2 trains) is ``max_staleness: 0``.
"""

from __future__ import annotations

import functools
from concurrent.futures import Future, ThreadPoolExecutor

from k2rl.rollouts.backends import Sampling


class DeferredLogging:
    """The trainer's reward keywords with the logging ones (``log_metric``, ``log_extra``) recorded instead
    of called: a background batch's calls wait for :meth:`replay` on the training thread."""

    LOGGING = ("log_metric", "log_extra")

    def __init__(self, reward_kwargs: dict):
        self.calls: list[tuple[str, tuple]] = []
        self.kwargs = dict(reward_kwargs)
        for key in self.LOGGING:
            if key in reward_kwargs:
                self.kwargs[key] = functools.partial(self._record, key)

    def _record(self, key: str, *args) -> None:
        self.calls.append((key, args))

    def replay(self, reward_kwargs: dict) -> None:
        for key, args in self.calls:
            reward_kwargs[key](*args)
        self.calls = []


class AheadRollouts:
    """``rollout_func`` wrapping a :class:`~k2rl.rollouts.engine.RolloutEngine`: each training call returns
    the batch started by the previous one. Evaluation calls stay synchronous."""

    def __init__(self, engine):
        self.engine = engine
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="k2rl-ahead")
        self._pending: Future | None = None
        self.waited_s = 0.0

    def __getattr__(self, name):  # backend, prompt_ids, limits...: the engine's
        return getattr(self.engine, name)

    def __call__(self, prompts: list, trainer) -> dict:
        if not trainer.model.training:
            self.wait()
            return self.engine(prompts, trainer)
        rows = (trainer.batch_rows() if hasattr(trainer, "batch_rows") else None) or [{"prompt": p} for p in prompts]
        args = trainer.args
        sampling = Sampling(args.temperature, args.top_p, args.top_k)
        live = trainer.reward_kwargs() if hasattr(trainer, "reward_kwargs") else {}
        if self._pending is None:
            output, stats, logged = self._run(rows, trainer.num_generations, sampling, DeferredLogging(live))
        else:
            output, stats, logged = self._pending.result()
        logged.replay(live)
        self._pending = self._pool.submit(self._run, rows, trainer.num_generations, sampling, DeferredLogging(live))
        for key in ("generate_s", "score_s", "wall_s"):
            trainer.record_metric(f"rollouts/{key}", float(getattr(stats, key)))
        trainer.record_metric("rollouts/staleness", 1.0)
        return output

    def _run(self, rows, group, sampling, logged: DeferredLogging):
        self.engine.reward_kwargs = logged.kwargs  # one batch at a time: the previous one has been returned
        output = self.engine.run(rows, group, sampling, carry=False)
        return output, self.engine.last_stats, logged

    def wait(self) -> None:
        """Let the batch in flight finish (before weights change under it, or at the end of the run)."""
        if self._pending is not None:
            self._pending.exception()

    def close(self) -> None:
        self.wait()
        self._pending = None
        self._pool.shutdown(wait=True)
