"""Routing replay: training forwards use the experts each token was routed to during rollout.

In MoE RL the sampled tokens come from one forward (generation: KV cache, one token at a time,
merged adapters, left padding) and the loss from another (one full-sequence pass, different padding,
after some optimizer steps). Near-tied router scores flip between the two, so the policy being
trained routes some tokens to experts that never produced them, and the importance ratio measures
router noise as well as policy change. Replay records every router's top-k choice during generation
and, in the training forward, keeps those choices; the routing weights of the replayed experts are
recomputed by the router's own forward with its top-k forced to them (:mod:`k2rl.experts.gating`), so
the router still gets gradients when it is trainable, on every MoE family.

Alignment: generation feeds ``prompt + completion[:-1]`` (the prefill step, then one token per step);
the training sequence is ``prompt + completion``. Each generated row is stored under its real
(non-padding) fed tokens; a training row is matched by its real tokens, and every position but the
last gets its recorded choice (the last token is never fed during generation; its logits are not part
of the loss). Rows or positions without a record keep the live router's choice.

Gradient checkpointing (TRL's default) recomputes each layer's forward during backward, outside the
replaying block; a router call with gradients enabled outside any mode is that recomputation, and gets
the last replayed choices again (otherwise the recomputed graph would not match the original one).

Off by default (``trainer.routing_replay``). One instance per trainer; rollouts are local to each
process, so no communication is needed.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import torch

from k2rl.errors import K2RLError
from k2rl.experts.families import model_type, moe_routers
from k2rl.experts.gating import check_replayable, gating_weights


def _decoder(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack (``embed_tokens`` + ``layers``): every forward, training or generation, calls it
    with ``input_ids`` and the 2-D ``attention_mask`` (PEFT calls the causal LM's ``forward`` directly,
    so a hook there would be skipped)."""
    for module in model.modules():
        if hasattr(module, "embed_tokens") and hasattr(module, "layers"):
            return module
    raise ValueError("routing replay: no decoder stack (embed_tokens + layers) in the model")


def replayable_routers(model: torch.nn.Module) -> list[tuple[int, torch.nn.Module]]:
    """The model's routers, each checked to be replayable; else one error naming the family."""
    routers = moe_routers(model, "trainer.routing_replay")
    if not routers:
        raise K2RLError(f"trainer.routing_replay: needs an MoE policy; {model_type(model)!r} has no routers")
    check_replayable([router for _, router in routers], model_type(model))
    return routers


class RoutingReplay:
    """Router hooks on ``model``: ``recording()`` during generation, ``replaying()`` in training forwards."""

    def __init__(self, model: torch.nn.Module):
        self.routers = replayable_routers(model)
        self.mode: str | None = None
        self.rollouts: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = defaultdict(list)
        self.mismatch = [0, 0]  # (token-layers whose live choice differed from the replayed one, token-layers replayed)
        self._steps: list[dict] = []  # generation: one entry per forward call
        self._call: dict = {}
        self._last_forced: torch.Tensor | None = None  # for gradient-checkpointing recomputation
        self._handles = [_decoder(model).register_forward_pre_hook(self._on_call, with_kwargs=True)]
        self._handles += [router.register_forward_hook(self._router_hook(row), with_kwargs=True) for row, (_, router) in enumerate(self.routers)]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    # -- modes ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def recording(self):
        """Generation: forget the previous rollouts, record this one's routing."""
        self.rollouts.clear()
        self._steps, self.mode, self._last_forced = [], "record", None
        try:
            yield
        finally:
            self.mode = None
            self._store()

    @contextlib.contextmanager
    def replaying(self):
        self.mode = "replay"
        try:
            yield
        finally:
            self.mode = None

    def take_mismatch(self) -> float | None:
        """Share of replayed (token, layer) choices the live router would have made differently, since last call."""
        differed, total = self.mismatch
        self.mismatch = [0, 0]
        return differed / total if total else None

    # -- hooks ----------------------------------------------------------------------------------
    def _on_call(self, module, args, kwargs):
        if self.mode is None:
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        attention_mask = kwargs.get("attention_mask")
        if input_ids is None:  # inputs_embeds: nothing to key on
            self._call = {}
            return
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = attention_mask[:, -input_ids.shape[1] :].bool()  # during decoding the mask covers the cache too
        if self.mode == "record":
            self._call = {"ids": input_ids.detach().cpu(), "mask": mask.cpu(), "routes": [None] * len(self.routers)}
            self._steps.append(self._call)
        else:
            self._call = {"forced": self._forced(input_ids.detach().cpu(), mask.cpu())}
            if torch.is_grad_enabled():
                self._last_forced = self._call["forced"]

    def _router_hook(self, row: int):
        def hook(module, args, kwargs, output):
            logits, weights, indices = output
            recomputing = self.mode is None and torch.is_grad_enabled() and self._last_forced is not None
            if recomputing:
                forced = self._last_forced
            elif self.mode is None or not self._call:
                return None
            elif self.mode == "record":
                self._call["routes"][row] = indices.detach().cpu()
                return None
            else:
                forced = self._call["forced"]
            if forced is None or forced.shape[1] != indices.shape[0]:
                return None
            forced = forced[row].to(indices.device)
            known = (forced >= 0).all(dim=-1)
            if not recomputing:
                live = indices.sort(dim=-1).values
                self.mismatch[0] += int((live[known] != forced[known].sort(dim=-1).values).any(dim=-1).sum())
                self.mismatch[1] += int(known.sum())
            chosen = torch.where(known[:, None], forced, indices)
            return logits, gating_weights(module, args, kwargs, chosen).to(weights.dtype), chosen

        return hook

    # -- bookkeeping ----------------------------------------------------------------------------
    def _store(self) -> None:
        steps = [s for s in self._steps if all(r is not None for r in s["routes"])]
        self._steps = []
        if not steps:
            return
        batch = steps[0]["ids"].shape[0]
        if any(s["ids"].shape[0] != batch for s in steps):
            return  # not one generate() call: nothing reliable to align
        ids = torch.cat([s["ids"] for s in steps], dim=1)
        mask = torch.cat([s["mask"] for s in steps], dim=1)
        # (layers, batch, positions, k)
        routes = torch.stack([torch.cat([s["routes"][r].view(batch, s["ids"].shape[1], -1) for s in steps], dim=1) for r in range(len(self.routers))])
        prompt_mask = steps[0]["mask"]
        for b in range(batch):
            prompt = tuple(steps[0]["ids"][b][prompt_mask[b]].tolist())
            self.rollouts[prompt].append((ids[b][mask[b]], routes[:, b][:, mask[b]]))

    def _forced(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """(layers, batch*positions, k) recorded choices for this call's tokens, -1 where none is known."""
        if not self.rollouts:
            return None
        batch, length = input_ids.shape
        k = next(iter(self.rollouts.values()))[0][1].shape[-1]
        forced = torch.full((len(self.routers), batch, length, k), -1, dtype=torch.long)
        for b in range(batch):
            positions = mask[b].nonzero().flatten()
            tokens = input_ids[b][positions]
            match = self._find(tokens)
            if match is not None:
                n = min(len(tokens) - 1, match.shape[1])
                forced[:, b, positions[:n]] = match[:, :n]
        return forced.view(len(self.routers), batch * length, k)

    def _find(self, tokens: torch.Tensor) -> torch.Tensor | None:
        for prompt, rows in self.rollouts.items():
            if len(prompt) < len(tokens) and tuple(tokens[: len(prompt)].tolist()) == prompt:
                for fed, routes in rows:
                    n = len(tokens) - 1
                    if len(fed) >= n and torch.equal(fed[:n], tokens[:n]):
                        return routes
        return None
