"""``rollout.backend: vllm`` in a run: start the engine, push after every optimizer step, check, stop.

TRL already knows when a step's weights must reach a generator (before the first generation of a new
global step) and how to correct the remaining mismatch (its importance-sampling correction on the
generator's log-probabilities). :class:`VLLMRollouts` plugs k2rl's engine into exactly those two
places -- TRL calls its ``sync_weights()`` -- and nothing else of TRL's vLLM code runs: no NCCL, no
sleep mode, no ``load_weights`` with the trainer's parameter names.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from k2rl.errors import K2RLError
from k2rl.rollouts.ahead import AheadRollouts
from k2rl.rollouts.backends import VLLMBackend
from k2rl.rollouts.vllm_check import logprob_gap, refuse
from k2rl.rollouts.vllm_engine import VLLMEngine
from k2rl.rollouts.vllm_sync import write_engine_checkpoint


class VLLMRollouts:
    """The trainer's ``vllm_generation``: pushes the policy's adapted weights and checks the engine.

    ``check_every`` steps (and before training) vLLM samples ``check_prompts`` and the policy scores
    the same tokens; the gap is logged as ``vllm/logprob_max_abs_diff``, and above ``threshold``
    training stops with one line naming the likely cause.
    """

    def __init__(self, backend: VLLMBackend, model_fn, step_fn, record_metric, check_prompts: list[list[int]],
                 check_every: int, threshold: float, check_tokens: int, temperature: float):
        self.backend, self.model_fn, self.step_fn, self.record_metric = backend, model_fn, step_fn, record_metric
        self.check_prompts, self.check_every, self.threshold = check_prompts, check_every, threshold
        self.check_tokens, self.temperature = check_tokens, temperature
        self.gaps: list[float] = []
        self.push_s: list[float] = []
        self.pushes = 0
        self.in_flight = None  # rollouts started ahead (rollout.max_staleness: 1): they finish before weights change

    def sync_weights(self) -> dict:
        """Push what changed; check every ``check_every`` steps. Called by TRL before a new step's rollouts."""
        if self.in_flight is not None:
            self.in_flight.wait()
        report = self.backend.push(self.model_fn())
        self.pushes += 1
        if report["tensors"]:
            self.push_s.append(report["push_s"])
            self.record_metric("vllm/push_s", report["push_s"])
            self.record_metric("vllm/push_megabytes", report["megabytes"])
        step = self.step_fn()
        if self.check_every and step > 0 and step % self.check_every == 0:
            self.check()
        return report

    def check(self) -> float:
        gap = logprob_gap(self.backend, self.model_fn(), self.check_prompts, self.check_tokens, self.temperature)
        first = self.gaps[0] if self.gaps else None
        self.gaps.append(gap)
        self.record_metric("vllm/logprob_max_abs_diff", gap)
        refuse(gap, self.threshold, self.backend.engine.info, self.pushes - 1, first)
        return gap

    def summary(self) -> dict:
        return {
            "logprob_max_abs_diff": max(self.gaps) if self.gaps else None,
            "logprob_checks": len(self.gaps),
            "pushes": self.pushes,
            "push_s_mean": round(statistics.fmean(self.push_s), 4) if self.push_s else None,
            "engine": dict(self.backend.engine.info),
        }

    def close(self) -> None:
        self.backend.close()


def start_vllm_rollouts(engine, rollout_config, trainer, run_dir: Path, seed: int) -> VLLMRollouts:
    """Start the engine for ``trainer``'s policy, point the rollout engine at it, hand it to TRL, check it once."""
    from k2rl import resources

    if trainer.accelerator.num_processes > 1:  # each process would start its own engine on the same files
        raise K2RLError("rollout.backend=vllm runs one engine per run; launch the trainer as one process")
    model = trainer.accelerator.unwrap_model(trainer.model)
    tokenizer = trainer.processing_class
    checkpoint = write_engine_checkpoint(model, tokenizer, Path(run_dir) / "vllm" / "checkpoint")
    longest = getattr(model.config, "max_position_embeddings", 2048)
    vllm = VLLMEngine(checkpoint, eos_token_ids=[tokenizer.eos_token_id], seed=seed,
                      max_model_len=min(longest, rollout_config.vllm_max_model_len),
                      max_num_seqs=max(trainer.args.generation_batch_size, rollout_config.vllm_check_prompts),
                      compile=rollout_config.vllm_compile, python=rollout_config.vllm_python,
                      log_path=Path(run_dir) / "vllm" / "engine.log")
    resources.shared(("k2rl.rollouts.vllm", str(run_dir)), lambda: vllm)  # closed with the run, whatever happens
    vllm.start()
    backend = VLLMBackend(vllm, tokenizer.eos_token_id)
    ahead = engine if isinstance(engine, AheadRollouts) else None
    (ahead.engine if ahead else engine).backend = backend
    rows = [trainer.train_dataset[i] for i in range(min(rollout_config.vllm_check_prompts, len(trainer.train_dataset)))]
    if not rows:
        raise K2RLError("rollout.backend=vllm: no training prompts to check the engine with")
    rollouts = VLLMRollouts(
        backend=backend, model_fn=lambda: trainer.accelerator.unwrap_model(trainer.model),
        step_fn=lambda: trainer.state.global_step, record_metric=trainer.record_metric, check_prompts=[engine.prompt_ids(row["prompt"]) for row in rows],
        check_every=rollout_config.vllm_check_every, threshold=rollout_config.vllm_check_threshold,
        check_tokens=trainer.args.max_completion_length, temperature=trainer.args.temperature,
    )
    if ahead is not None:
        rollouts.in_flight = ahead
        resources.shared(("k2rl.rollouts.ahead", str(run_dir)), lambda: ahead)  # closed before the engine
    rollouts.sync_weights()  # the adapters as they start (a resumed run's are pushed again at its first step)
    rollouts.check()  # before any training: the engine computes the policy, or the run stops here
    trainer.adopt_vllm_engine(rollouts)
    return rollouts
