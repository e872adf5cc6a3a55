"""The RL optimizer: TRL's AdamW, or Muon per matrix with AdamW on the rest (K2), MuonClip, and K1.5's reset.

``trainer.optimizer: muon`` hands every trainable 2-D parameter to :class:`k2rl.trainer.muon.BlockMuon`
at ``trainer.muon_learning_rate`` (default: :func:`muon_rate` of the AdamW rate) and everything else
(biases, norms, e.g. PPO's value-head biases) to the Trainer's own AdamW at ``trainer.learning_rate``. Each routed expert's
LoRA A and B blocks are orthogonalised on their own (PEFT stacks all experts of a fused expert tensor
into one parameter; :func:`k2rl.experts._peft.routed_expert_lora` says where each expert's block is);
the shared expert's, attention's, dense MLP's LoRA matrices and a trainable router's weight are each
one matrix. Each block's step has the RMS AdamW's would have for that block (see :mod:`k2rl.trainer.muon`),
so rates stay comparable across block shapes and with AdamW's; the weight decay is the Trainer's ``weight_decay`` (0 by default).

``trainer.optimizer: muonclip`` adds K2's QK-Clip (:mod:`k2rl.trainer.qk_clip`) after every optimizer
step; it needs trained MLA attention (``trainer.lora.targets`` with ``attention``), and the recipe is
refused at load time otherwise: without trained query/key weights there is nothing to clip.

Both optimizers sit behind one :class:`MuonAdamW` that shares their parameter groups, so the
Trainer's learning-rate schedule, gradient clipping and checkpoints handle it like any optimizer.

``trainer.reset_optimizer_every: N`` (:class:`OptimizerReset`) empties the optimizer state (moments,
momentum buffers, step counts) after every N-th optimizer step, as K1.5 resets it per iteration.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from k2rl.experts._peft import routed_expert_lora
from k2rl.trainer.muon import BlockMuon, evaluate

OPTIMIZERS = ("adamw", "muon", "muonclip")


class MuonAdamW(torch.optim.Optimizer):
    """Muon on the 2-D parameters and AdamW on the rest, as one optimizer (either part may be empty);
    with ``after_step`` (QK-Clip), called after every update."""

    def __init__(self, muon: torch.optim.Optimizer | None, adamw: torch.optim.Optimizer | None, after_step=None):
        self.parts = {name: opt for name, opt in (("muon", muon), ("adamw", adamw)) if opt is not None}
        self.after_step = after_step
        # The same group dicts as the parts': a scheduler setting ``lr`` here sets it for them.
        super().__init__([group for opt in self.parts.values() for group in opt.param_groups], {})

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate(closure)
        for opt in self.parts.values():
            opt.step()
        if self.after_step is not None:
            self.after_step()
        return loss

    def state_dict(self):
        return {name: opt.state_dict() for name, opt in self.parts.items()}

    def load_state_dict(self, state_dict):
        for name, opt in self.parts.items():
            opt.load_state_dict(state_dict[name])

    def reset(self) -> None:
        for opt in self.parts.values():
            opt.state.clear()


# Muon's default rate per unit of AdamW's. BlockMuon sizes a block's step by one scalar (the block's
# momentum RMS over its root mean squared gradient) and spreads it evenly over the block's singular
# directions; AdamW sizes every element on its own. The two steps differ by a factor no formula gives,
# so it is measured: benchmarks/optimizers.py sweeps it, and the README's "Choosing Muon" has the sweep
# and the acceptance runs at this default.
MUON_RATE_PER_ADAMW_RATE = 2.0


def muon_rate(adamw_lr: float) -> float:
    """Muon's learning rate when the recipe sets only AdamW's."""
    return MUON_RATE_PER_ADAMW_RATE * adamw_lr


def muon_groups(model) -> list[dict]:
    """:class:`BlockMuon` parameter groups for ``model``'s trainable 2-D parameters: the routed experts'
    stacked LoRA A (``expert_rows``) and B (``expert_cols``) matrices split per expert, every other one whole."""
    trainable = {id(p): p for p in model.parameters() if p.requires_grad and p.ndim == 2}
    groups, stacked = {}, set()
    for weight_a, weight_b, experts in routed_expert_lora(model):
        for layout, weight in (("expert_rows", weight_a), ("expert_cols", weight_b)):
            if id(weight) in trainable:
                groups.setdefault((layout, experts), []).append(weight)
                stacked.add(id(weight))
    whole = [p for key, p in trainable.items() if key not in stacked]
    found = [{"params": params, "layout": layout, "experts": experts} for (layout, experts), params in groups.items()]
    return found + ([{"params": whole, "layout": "matrix", "experts": 1}] if whole else [])


def muon_adamw(model, weight_decay: float, muon_lr: float, adamw_cls, adamw_kwargs: dict, decay_names,
               after_step=None, step_rms: str = "adamw") -> MuonAdamW:
    """The combined optimizer over ``model``'s trainable parameters (AdamW: the Trainer's class and kwargs,
    with its usual split into decayed and non-decayed groups by ``decay_names``)."""
    matrices = muon_groups(model)
    rest = [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.ndim != 2]
    muon = BlockMuon(matrices, lr=muon_lr, weight_decay=weight_decay, step_rms=step_rms) if matrices else None
    groups = [
        {"params": [p for n, p in rest if n in decay_names], "weight_decay": weight_decay},
        {"params": [p for n, p in rest if n not in decay_names], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    return MuonAdamW(muon, adamw_cls(groups, **adamw_kwargs) if groups else None, after_step)


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
