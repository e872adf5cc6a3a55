"""Muon over blocks: every matrix that means something is orthogonalised on its own.

Muon replaces a matrix's update by the nearest semi-orthogonal matrix (all singular values near 1),
which only makes sense for a tensor that *is* one linear map. PEFT stacks the LoRA matrices of all
routed experts of a fused expert tensor into one 2-D parameter (expert ``e`` owns rows ``e*r..e*r+r-1``
of ``lora_A`` and columns ``j*E + e`` of ``lora_B``, see :func:`k2rl.experts._peft.routed_expert_lora`),
so orthogonalising that parameter as a whole couples unrelated experts: one busy expert's gradient
sets the scale and directions of every other expert's step. :class:`BlockMuon` views such a parameter
as its ``E`` expert blocks and runs the Newton-Schulz iteration on all of them as one batch, each block
normalised by its own norm, so expert ``e``'s update depends on expert ``e``'s gradient only.

Each block's step is scaled by Moonshot's ``0.2 * sqrt(max(rows, cols))`` of *that block* (the
"Muon is Scalable" rule K2 uses): it gives the update the RMS of a typical AdamW update, so an AdamW
learning rate is the right order of magnitude for Muon too.

Why not ``torch.optim.Muon``: it only accepts whole 2-D parameters (a per-expert view is not a
parameter it can hold state for), it runs one matrix at a time (hundreds of tiny expert blocks per
step), and its Newton-Schulz runs in bfloat16, which k2rl never uses on CPU (results must not depend
on the CPU's bf16 support). The iteration below is the same quintic, with the same coefficients and
step count, in float32 over a batch of blocks.
"""

from __future__ import annotations

import math

import torch

# The quintic Newton-Schulz coefficients and step count Muon uses (also torch.optim.Muon's defaults).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
MATCH_ADAMW_RMS = 0.2

# How a parameter splits into blocks: a plain matrix is one block; expert LoRA stacks E of them.
LAYOUTS = ("matrix", "expert_rows", "expert_cols")


def orthogonalise(blocks: torch.Tensor, steps: int = NS_STEPS, eps: float = 1e-7) -> torch.Tensor:
    """Newton-Schulz on a batch ``(N, rows, cols)``: each block mapped near its orthogonal factor ``U V^T``."""
    a, b, c = NS_COEFFICIENTS
    x = blocks.float()
    wide = x.size(-2) <= x.size(-1)
    if not wide:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # each block's spectral norm <= 1
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.mT


def as_blocks(tensor: torch.Tensor, layout: str, experts: int) -> torch.Tensor:
    """``tensor`` (a parameter's shape) as ``(blocks, rows, cols)``; a view where the layout allows."""
    if layout == "matrix":
        return tensor.unsqueeze(0)
    if layout == "expert_rows":  # lora_A: expert e owns rows e*r .. e*r+r-1
        return tensor.view(experts, tensor.size(0) // experts, tensor.size(1))
    # lora_B: expert e owns columns j*E + e (j < r)
    return tensor.view(tensor.size(0), tensor.size(1) // experts, experts).permute(2, 0, 1)


def from_blocks(blocks: torch.Tensor, layout: str, shape: torch.Size) -> torch.Tensor:
    """The inverse of :func:`as_blocks`."""
    if layout == "matrix":
        return blocks.squeeze(0)
    if layout == "expert_rows":
        return blocks.reshape(shape)
    return blocks.permute(1, 2, 0).reshape(shape)


def evaluate(closure):
    """An optimizer ``step``'s ``closure`` (the loss, recomputed with gradients), or None."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class BlockMuon(torch.optim.Optimizer):
    """Muon (Nesterov momentum, then per-block orthogonalisation and RMS matching) over parameter groups
    that each carry a ``layout`` (:data:`LAYOUTS`) and, for expert layouts, the number of ``experts``."""

    def __init__(self, groups: list[dict], lr: float, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, ns_steps: int = NS_STEPS):
        for group in groups:
            if group.get("layout", "matrix") not in LAYOUTS:
                raise ValueError(f"unknown block layout {group['layout']!r}")
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay,
                    "ns_steps": ns_steps, "layout": "matrix", "experts": 1}
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate(closure)
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(param)
                buffer = state["momentum_buffer"]
                buffer.lerp_(param.grad, 1 - group["momentum"])
                update = param.grad.lerp(buffer, group["momentum"]) if group["nesterov"] else buffer
                blocks = as_blocks(update, group["layout"], group["experts"])
                ortho = orthogonalise(blocks, group["ns_steps"])
                scale = MATCH_ADAMW_RMS * math.sqrt(max(blocks.shape[-2:]))
                param.mul_(1 - group["lr"] * group["weight_decay"])
                param.add_(from_blocks(ortho, group["layout"], param.shape).to(param.dtype), alpha=-group["lr"] * scale)
        return loss
