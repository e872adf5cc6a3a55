"""Muon over blocks: every matrix that means something is orthogonalised on its own.

Muon replaces a matrix's update by the nearest semi-orthogonal matrix (all singular values near 1),
which only makes sense for a tensor that *is* one linear map. PEFT stacks the LoRA matrices of all
routed experts of a fused expert tensor into one 2-D parameter (expert ``e`` owns rows ``e*r..e*r+r-1``
of ``lora_A`` and columns ``j*E + e`` of ``lora_B``, see :func:`k2rl.experts._peft.routed_expert_lora`),
so orthogonalising that parameter as a whole couples unrelated experts: one busy expert's gradient
sets the scale and directions of every other expert's step. :class:`BlockMuon` views such a parameter
as its ``E`` expert blocks and runs the Newton-Schulz iteration on all of them as one batch, each block
normalised by its own norm, so expert ``e``'s update depends on expert ``e``'s gradient only.

Each block's step is then given the RMS AdamW's step would have for that block *now*: the block's
bias-corrected momentum RMS over the square root of its bias-corrected mean squared gradient (one
second-moment scalar per block, AdamW's ``beta2``). Moonshot's "Muon is Scalable" rule fixes that RMS
at ``0.2`` (``0.2 * sqrt(max(rows, cols))`` times the orthogonal factor), the figure AdamW settles at
over a long pre-training run. A short RL fine-tune is not that run: its LoRA B blocks start at zero and
their gradients are mostly noise (a policy gradient from a few dozen samples; rarely routed experts see
a few tokens), and a fixed-RMS step turns noise into full-size, momentum-correlated steps, so Muon drifts the adapters several
times further than AdamW does and degrades the policy after it has learned (benchmarks/optimizers.py
and the README's "Choosing Muon" show it). AdamW's step shrinks where the momentum averages noise out;
measuring that ratio per block keeps Muon's directions (all singular values equal) and AdamW's sizes,
so a rate of the order of AdamW's carries over, and expert ``e``'s step still depends on its own
gradient only.

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
MOONSHOT_RMS = 0.2  # "Muon is Scalable": every step's RMS fixed at AdamW's long-run figure (step_rms="moonshot")
STEP_RMS_RULES = ("adamw", "moonshot")
SECOND_MOMENT_DECAY = 0.999  # AdamW's default beta2: the per-block mean squared gradient's decay
EPS = 1e-8  # AdamW's default epsilon, added to the root of the second moment

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
    """Muon (Nesterov momentum, then per-block orthogonalisation, each block's step sized as AdamW's) over
    parameter groups that each carry a ``layout`` (:data:`LAYOUTS`) and, for expert layouts, the number of ``experts``."""

    def __init__(self, groups: list[dict], lr: float, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, ns_steps: int = NS_STEPS, beta2: float = SECOND_MOMENT_DECAY,
                 eps: float = EPS, step_rms: str = "adamw"):
        if step_rms not in STEP_RMS_RULES:
            raise ValueError(f"unknown step RMS rule {step_rms!r} (known: {', '.join(STEP_RMS_RULES)})")
        for group in groups:
            if group.get("layout", "matrix") not in LAYOUTS:
                raise ValueError(f"unknown block layout {group['layout']!r}")
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay,
                    "ns_steps": ns_steps, "beta2": beta2, "eps": eps, "step_rms": step_rms, "layout": "matrix",
                    "experts": 1}
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = evaluate(closure)
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self.update(param, group)
        return loss

    def update(self, param: torch.Tensor, group: dict) -> None:
        layout, experts, beta, beta2 = group["layout"], group["experts"], group["momentum"], group["beta2"]
        state = self.state[param]
        if "momentum_buffer" not in state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["momentum_buffer"] = torch.zeros_like(param)
            state["block_sq"] = torch.zeros(as_blocks(param, layout, experts).size(0), dtype=torch.float32)
        state["step"] += 1
        step, buffer = state["step"].item(), state["momentum_buffer"]
        grad_blocks = as_blocks(param.grad, layout, experts).float()
        state["block_sq"].lerp_(grad_blocks.pow(2).mean(dim=(-2, -1)), 1 - beta2)
        buffer.lerp_(param.grad, 1 - beta)
        update = param.grad.lerp(buffer, beta) if group["nesterov"] else buffer
        blocks = as_blocks(update, layout, experts)
        # AdamW's update RMS for each block: |momentum| / sqrt(second moment), both bias-corrected.
        momentum_rms = as_blocks(buffer, layout, experts).float().pow(2).mean(dim=(-2, -1)).sqrt() / (1 - beta**step)
        grad_rms = (state["block_sq"] / (1 - beta2**step)).sqrt() + group["eps"]
        # An orthogonal factor's RMS is 1/sqrt(max(rows, cols)); this scale gives the step that RMS times lr.
        if group["step_rms"] == "moonshot":  # K2's rule as published: a fixed RMS, whatever the gradient's noise
            scale = torch.full((blocks.size(0), 1, 1), MOONSHOT_RMS * math.sqrt(max(blocks.shape[-2:])))
        else:
            scale = (momentum_rms / grad_rms * math.sqrt(max(blocks.shape[-2:]))).view(-1, 1, 1)
        ortho = orthogonalise(blocks, group["ns_steps"]) * scale
        param.mul_(1 - group["lr"] * group["weight_decay"])
        param.add_(from_blocks(ortho, layout, param.shape).to(param.dtype), alpha=-group["lr"])
