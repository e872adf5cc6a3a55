"""The RL optimizer: TRL's AdamW, or Muon on 2-D weights with AdamW on the rest (K2), and K1.5's reset.

``trainer.optimizer: muon`` hands every trainable 2-D parameter (the expert LoRA A/B matrices, a
trainable router's weight) to ``torch.optim.Muon`` at ``trainer.muon_learning_rate`` (default: the
AdamW rate) and everything else (biases, norms, e.g. PPO's value-head biases) to the Trainer's own
AdamW at ``trainer.learning_rate``. Muon uses Moonshot's ``match_rms_adamw`` step scaling (the
"Muon is Scalable" rule K2 trains with), which is what lets it reuse an AdamW learning rate; its weight
decay is the Trainer's ``weight_decay`` (0 by default), not torch's 0.1. Not done: MuonClip's
QK-clip (the adapters never touch attention) and per-expert orthogonalisation: PEFT stacks the
experts' LoRA matrices into one 2-D tensor, and Muon orthogonalises that tensor as a whole.

Both optimizers sit behind one :class:`MuonAdamW` that shares their parameter groups, so the
Trainer's learning-rate schedule, gradient clipping and checkpoints handle it like any optimizer.

``trainer.reset_optimizer_every: N`` (:class:`OptimizerReset`) empties the optimizer state (moments,
momentum buffers, step counts) after every N-th optimizer step, as K1.5 resets it per iteration.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

OPTIMIZERS = ("adamw", "muon")


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the 2-D parameters and AdamW on the rest, as one optimizer (either part may be empty)."""

    def __init__(self, muon: torch.optim.Muon | None, adamw: torch.optim.Optimizer | None):
        self.parts = {name: opt for name, opt in (("muon", muon), ("adamw", adamw)) if opt is not None}
        # The same group dicts as the parts': a scheduler setting ``lr`` here sets it for them.
        super().__init__([group for opt in self.parts.values() for group in opt.param_groups], {})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.parts.values():
            opt.step()
        return loss

    def state_dict(self):
        return {name: opt.state_dict() for name, opt in self.parts.items()}

    def load_state_dict(self, state_dict):
        for name, opt in self.parts.items():
            opt.load_state_dict(state_dict[name])

    def reset(self) -> None:
        for opt in self.parts.values():
            opt.state.clear()


def muon_adamw(model, weight_decay: float, muon_lr: float, adamw_cls, adamw_kwargs: dict, decay_names) -> MuonAdamW:
    """The combined optimizer over ``model``'s trainable parameters (AdamW: the Trainer's class and kwargs,
    with its usual split into decayed and non-decayed groups by ``decay_names``)."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    matrices = [p for _, p in trainable if p.ndim == 2]
    rest = [(n, p) for n, p in trainable if p.ndim != 2]
    muon = torch.optim.Muon(matrices, lr=muon_lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw") if matrices else None
    groups = [
        {"params": [p for n, p in rest if n in decay_names], "weight_decay": weight_decay},
        {"params": [p for n, p in rest if n not in decay_names], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    return MuonAdamW(muon, adamw_cls(groups, **adamw_kwargs) if groups else None)


def reset_state(optimizer) -> None:
    """Forget ``optimizer``'s state (the accelerate wrapper, a :class:`MuonAdamW` or a plain torch optimizer)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    if isinstance(inner, MuonAdamW):
        inner.reset()
    else:
        inner.state.clear()


class OptimizerReset(TrainerCallback):
    """Empty the optimizer state after every ``every``-th optimizer step."""

    def __init__(self, every: int):
        self.every = every

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is not None and state.global_step % self.every == 0:
            reset_state(optimizer)
