"""A critic with an adapter of its own: the live policy plus a critic delta, refined by its own optimizer.

Why it exists (figures: rewards/README.md, benchmarks/critic_agreement.py): refined K2 style, as an auxiliary loss
in the policy's own update, a tiny critic gets one optimizer step per RL step at the policy's
learning rate, on the latest batch only. The easy preference the verifier shows it early on (worked
answers beat bare guesses) is gone from the batches within a few dozen RL steps, because the policy stops
writing bare guesses, before the critic has learned it; afterwards nothing it saw is left to learn
from. With ``critic.refine_adapter: own`` the critic instead judges with

    policy adapter (live, shared with the policy) + critic adapter (``critic``, trained here)

- It still reads with the policy's current weights: whatever the policy learns, the critic knows,
  which is the point of a self-critic. Only the critic's delta is its own.
- The delta has its own AdamW, learning rate and number of steps per RL step (``refine_steps``),
  so the critic can learn faster than the policy changes.
- It trains on a replay of labelled verdicts, not only the latest batch: the most recent ones
  (``refine_replay``) plus, optionally, a uniform sample of all of them (``refine_reservoir``), so
  early lessons are not dropped once the policy moves on (:mod:`k2rl.critic.replay`).
- The two optimizers never share parameters: the critic's tensors are not trainable when TRL
  builds the policy's optimizer, and the policy's are frozen while the critic trains.

The critic trains right after each policy optimizer step (``on_step_end``, gradients already zeroed);
its labels come from that step's rollouts. Both adapters are saved with the run (``adapter/`` and
``adapter/critic/``) and with every checkpoint, together with the critic's optimizer state and
replay, so a resumed run continues the critic where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from peft import set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import TrainerCallback

from k2rl.critic.refinement import CriticRefinement
from k2rl.errors import K2RLError

CRITIC_ADAPTER = "critic"
STATE_FILE = "critic_state.pt"  # the critic's optimizer, next to the checkpoint's adapter/critic/ weights
REPLAY_FILE = "critic_replay_{process}.json"  # one per process: each holds the labels of its own share of the batch


class OwnCriticAdapter(TrainerCallback):
    """Adds the ``critic`` adapter to a PEFT policy, switches it on for judging, and trains it after each RL step."""

    def __init__(self, refinement: CriticRefinement, learning_rate: float, steps: int, max_grad_norm: float = 1.0):
        self.refinement, self.learning_rate, self.steps, self.max_grad_norm = refinement, learning_rate, steps, max_grad_norm
        self.model = None
        self.policy_adapter = "default"
        self.critic_parameters: list[torch.nn.Parameter] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.log_metric: Callable[[str, float], None] = lambda name, value: None
        self.updates = 0  # critic optimizer steps taken
        self.seconds = 0.0  # time spent training the critic (forward, backward, step)
        self._restore_checked = False

    def attach(self, peft_model, lora_config, log_metric: Callable[[str, float], None] | None = None) -> OwnCriticAdapter:
        """Add the critic adapter (same shape as the policy's: ``lora_config``) to ``peft_model``, untrainable for TRL."""
        self.model = peft_model
        self.policy_adapter = peft_model.active_adapter
        peft_model.add_adapter(CRITIC_ADAPTER, lora_config)
        self.critic_parameters = [p for name, p in peft_model.named_parameters() if f".{CRITIC_ADAPTER}." in name]
        if not self.critic_parameters:
            raise RuntimeError("the critic adapter added no parameters")
        for p in self.critic_parameters:
            p.requires_grad_(False)
            if dist.is_available() and dist.is_initialized():
                # TRL seeds each process differently, so the adapters' random init differs; DDP syncs the
                # policy's at wrap time, but this adapter is not DDP's: start every process from rank 0's.
                dist.broadcast(p.data, src=0)
        self.optimizer = torch.optim.AdamW(self.critic_parameters, lr=self.learning_rate, weight_decay=0.0)
        if log_metric is not None:
            self.log_metric = log_metric
        return self

    @contextlib.contextmanager
    def _active(self, train_critic: bool) -> Iterator[None]:
        """Policy and critic adapters both on; with ``train_critic``, only the critic's tensors take gradients."""
        flags = [(p, p.requires_grad) for p in self.model.parameters()]
        self.model.base_model.set_adapter([self.policy_adapter, CRITIC_ADAPTER])
        try:
            if train_critic:
                for p, _ in flags:
                    p.requires_grad_(False)
                for p in self.critic_parameters:
                    p.requires_grad_(True)
            yield
        finally:
            self.model.base_model.set_adapter(self.policy_adapter)
            for p, flag in flags:  # set_adapter marks adapters trainable or not; put back exactly what was there
                p.requires_grad_(flag)

    def judging(self) -> contextlib.AbstractContextManager:
        """Context in which the model judges as the critic (policy + critic adapters)."""
        return self._active(train_critic=False)

    def refine(self) -> float | None:
        """``steps`` optimizer steps on draws from the replay; the mean loss, or None if no process has labels."""
        started = time.perf_counter()
        examples_per_step = [self.refinement.draw() for _ in range(self.steps)]
        available = torch.tensor([float(sum(map(len, examples_per_step)))])
        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            dist.all_reduce(available)  # every process must take the same steps: the gradients are averaged
        if available.item() == 0:
            return None
        losses = []
        was_training = self.model.training
        self.model.train()
        with self._active(train_critic=True):
            for examples in examples_per_step:
                self.optimizer.zero_grad(set_to_none=False)
                if examples:
                    loss = self.refinement.loss(self.model, examples)
                    loss.backward()
                    losses.append(loss.item())
                if distributed:
                    for p in self.critic_parameters:
                        if p.grad is None:  # this process had no labels this step: it contributes zeros
                            p.grad = torch.zeros_like(p)
                        dist.all_reduce(p.grad)
                        p.grad /= dist.get_world_size()
                torch.nn.utils.clip_grad_norm_(self.critic_parameters, self.max_grad_norm)
                self.optimizer.step()
                self.updates += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.model.train(was_training)
        self.seconds += time.perf_counter() - started
        return sum(losses) / len(losses) if losses else None

    # -- TrainerCallback --------------------------------------------------------------------------

    def on_step_begin(self, args, state, control, **kwargs):
        if not self._restore_checked:  # the trainer has loaded a resumed run's state by now (not yet at on_train_begin)
            self._restore_checked = True
            if state.global_step > 0:
                self.load(Path(args.output_dir) / f"checkpoint-{state.global_step}", args.process_index)

    def on_step_end(self, args, state, control, **kwargs):
        started = time.perf_counter()
        loss = self.refine()
        if loss is not None:
            self.log_metric("critic/refine_loss", loss)
        self.log_metric("critic/refine_s", time.perf_counter() - started)
        self.log_metric("critic/replay", float(self.refinement.replayed))

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not checkpoint.is_dir():
            return
        if state.is_world_process_zero:  # the critics are identical across processes (averaged gradients)
            torch.save({"optimizer": self.optimizer.state_dict(), "updates": self.updates}, checkpoint / STATE_FILE)
        replay = checkpoint / REPLAY_FILE.format(process=args.process_index)
        replay.write_text(json.dumps(self.refinement.replay_state()))

    def load(self, checkpoint: Path, process: int = 0) -> None:
        """Critic weights, optimizer and (this ``process``'s) replay from a checkpoint of a run with this adapter."""
        weights = checkpoint / CRITIC_ADAPTER / "adapter_model.safetensors"
        if not weights.is_file():
            raise K2RLError(f"{checkpoint} has no critic adapter ({weights}); was it written with critic.refine_adapter: own?")
        set_peft_model_state_dict(self.model, load_file(str(weights)), adapter_name=CRITIC_ADAPTER)
        state = torch.load(checkpoint / STATE_FILE, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]
        self.refinement.load_replay_state(json.loads((checkpoint / REPLAY_FILE.format(process=process)).read_text()))
