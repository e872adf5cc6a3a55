"""Gating weights for experts chosen elsewhere (routing replay), computed by the router's own forward.

Routing replay keeps the experts a token was routed to during rollout and recomputes their gating
weights from the current router, so a trainable router still gets gradients. A router's forward
returns the weights of the experts *it* picks, not of given ones. Rather than copy each family's
formula (sigmoid or softmax, before or after top-k, bias, grouping, renormalisation, scaling), the
router's own forward is run again with its top-k selection forced: within :func:`gating_weights`,
the one ``torch.topk`` over ``(tokens, experts)`` scores returns the given experts and those
experts' scores, and everything the router does afterwards is its own code. On the router's own
choices this reproduces its output exactly.

A router that does not select with one such ``torch.topk`` cannot be forced;
:func:`check_replayable` probes every router class before training and refuses it in one line.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from k2rl.errors import K2RLError

TOPK = (torch.topk, torch.Tensor.topk)


class _ForcedTopk(TorchFunctionMode):
    """``torch.topk(scores, k)`` over ``(tokens, experts)`` scores returns ``chosen`` (tokens x k) instead."""

    def __init__(self, chosen: torch.Tensor, num_experts: int):
        super().__init__()
        self.chosen, self.num_experts, self.forced = chosen, num_experts, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in TOPK:
            scores = args[0]
            k = args[1] if len(args) > 1 else kwargs.get("k")
            dim = args[2] if len(args) > 2 else kwargs.get("dim", -1)
            if (scores.dim() == 2 and dim in (-1, 1) and tuple(scores.shape) == (self.chosen.shape[0], self.num_experts)
                    and k == self.chosen.shape[1]):
                self.forced += 1
                chosen = self.chosen.to(scores.device)
                return torch.return_types.topk((scores.gather(1, chosen), chosen))
        return func(*args, **kwargs)


def _num_experts(router: torch.nn.Module) -> int:
    return getattr(router, "original_module", router).weight.shape[0]  # PEFT's modules_to_save keeps the original


def forced_forward(router: torch.nn.Module, args: tuple, kwargs: dict, chosen: torch.Tensor) -> tuple[tuple, int]:
    """The router's forward on ``args`` with its top-k choice forced to ``chosen``; and how many top-k calls were forced."""
    mode = _ForcedTopk(chosen, _num_experts(router))
    with mode:
        output = router.forward(*args, **kwargs)  # .forward: not the hooks that called us
    return output, mode.forced


def gating_weights(router: torch.nn.Module, args: tuple, kwargs: dict, chosen: torch.Tensor) -> torch.Tensor:
    """The router's gating weights for ``chosen`` experts (tokens x k) on its inputs ``args``/``kwargs``."""
    output, _ = forced_forward(router, args, kwargs, chosen)
    return output[1]


def check_replayable(routers: list[torch.nn.Module], family: str) -> None:
    """Every router class can be forced: on a probe input, forcing its own choice reproduces its output,
    and forcing other experts returns those experts. Else one error naming the family and the router."""
    probed = set()
    for router in routers:
        name = type(getattr(router, "original_module", router)).__name__
        if name in probed:
            continue
        probed.add(name)
        weight = getattr(router, "original_module", router).weight
        generator = torch.Generator().manual_seed(0)
        hidden = torch.randn(3, weight.shape[1], generator=generator).to(weight)
        with torch.no_grad():
            output = router(hidden)
            ok = isinstance(output, tuple) and len(output) == 3 and output[2].dim() == 2
            if ok:
                _, weights, indices = output
                own, hits_own = forced_forward(router, (hidden,), {}, indices)
                other = (indices + 1) % weight.shape[0]
                moved, hits_other = forced_forward(router, (hidden,), {}, other)
                ok = (hits_own == hits_other == 1 and torch.equal(own[2], indices) and torch.equal(moved[2], other)
                      and torch.allclose(own[1], weights, rtol=1e-5, atol=1e-7))
        if not ok:
            raise K2RLError(
                f"trainer.routing_replay: cannot replay routing for MoE family {family!r}: its router {name} does not "
                "select experts with one torch.topk over (tokens, experts) scores; turn routing_replay off for this model"
            )
