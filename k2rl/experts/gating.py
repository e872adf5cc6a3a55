"""Gating weights for experts chosen elsewhere (routing replay), per router family, in one place.

Routing replay keeps the experts a token was routed to during rollout and recomputes their gating
weights from the current router logits, so a trainable router still gets gradients. A router's
forward returns the weights of the experts *it* picks, not of given ones, so the recomputation is
the family's own formula applied to given experts. Each supported router class is listed here with
its formula (written against transformers 5.24); a router of any other class is one clear error
before training, never a silently different forward. ``tests/test_routing_replay.py`` checks each
formula against the router's own output on the router's own choices.
"""

from __future__ import annotations

import torch

from k2rl.errors import K2RLError


def _sigmoid_topk(router: torch.nn.Module, logits: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """DeepseekV3TopkRouter: sigmoid scores of the chosen experts, optionally normalised, then scaled."""
    weights = logits.sigmoid().gather(1, chosen)
    if getattr(router, "norm_topk_prob", False):
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights * getattr(router, "routed_scaling_factor", 1.0)


FORMULAS = {"DeepseekV3TopkRouter": _sigmoid_topk}


def _family(router: torch.nn.Module) -> torch.nn.Module:
    return getattr(router, "original_module", router)  # PEFT's modules_to_save wrapper keeps the original


def check_replayable(routers: list[torch.nn.Module]) -> None:
    """Every router has a known gating formula; else one error naming the router class."""
    for router in routers:
        name = type(_family(router)).__name__
        if name not in FORMULAS:
            raise K2RLError(
                f"trainer.routing_replay: no gating formula for router {name} "
                f"(supported: {', '.join(sorted(FORMULAS))}); turn routing_replay off for this model"
            )


def gating_weights(router: torch.nn.Module, logits: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """The router's gating weights for ``chosen`` experts (tokens x k) from its ``logits`` (tokens x experts)."""
    family = _family(router)
    return FORMULAS[type(family).__name__](family, logits, chosen)
