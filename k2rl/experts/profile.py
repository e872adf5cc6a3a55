"""Which experts does the task use? Profile the MoE routers on training prompts, pick experts by relevance.

After ESFT (DeepSeek, 2024, "Let the Expert Stick to His Last"): a task's tokens concentrate on a
few experts per layer, so adapting only those keeps most of the gain at a fraction of the
parameters. Two relevance scores per (layer, expert), both averaged over the prompts' real tokens:
- ``gate``: the routing weight the expert receives (its share of the token's normalised top-k
  weights; zero when it is not chosen), ESFT's "average gate score";
- ``share``: how often the expert is among the token's top-k, ESFT's "token selection ratio".
Selection, per layer: sort experts by relevance and keep the smallest prefix whose cumulative share
of the layer's total relevance reaches ``p``.

The profile is saved with the run (``routing_profile.json``) and drawn as an experts x layers heat
map (``routing_profile.png``) with the selected experts marked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from k2rl.distributed import from_main, is_main
from k2rl.errors import K2RLError
from k2rl.layout import RunLayout
from k2rl.experts.families import model_type, moe_routers

SCORES = ("gate", "share")


@dataclass
class RoutingProfile:
    """Relevance of every routed expert in every MoE layer, measured on ``tokens`` prompt tokens."""

    layers: list[int]
    gate: np.ndarray  # (layers, experts)
    share: np.ndarray  # (layers, experts)
    tokens: int

    def relevance(self, score: str) -> np.ndarray:
        if score not in SCORES:
            raise K2RLError(f"expert_selection.score: expected one of {', '.join(SCORES)}, got {score!r}")
        values = self.gate if score == "gate" else self.share
        return values / np.maximum(values.sum(axis=1, keepdims=True), 1e-12)

    def select(self, p: float, score: str = "gate") -> dict[int, list[int]]:
        """Per layer, the most relevant experts whose cumulative relevance share reaches ``p``."""
        if not 0.0 < p <= 1.0:
            raise K2RLError(f"expert_selection.threshold_p must be in (0, 1], got {p}")
        chosen = {}
        for layer, row in zip(self.layers, self.relevance(score)):
            order = np.argsort(-row, kind="stable")
            cumulative = np.cumsum(row[order])
            count = int(np.searchsorted(cumulative, p - 1e-9) + 1)  # first prefix reaching p
            chosen[layer] = sorted(int(e) for e in order[: min(count, len(row))])
        return chosen

    def save(self, path: Path) -> None:
        data = {"layers": self.layers, "tokens": self.tokens, "gate": self.gate.tolist(), "share": self.share.tolist()}
        Path(path).write_text(json.dumps(data) + "\n")

    @classmethod
    def load(cls, path: Path) -> RoutingProfile:
        data = json.loads(Path(path).read_text())
        return cls(data["layers"], np.array(data["gate"]), np.array(data["share"]), data["tokens"])


@torch.no_grad()
def profile_routing(model, tokenizer, prompts: list, batch_size: int = 32) -> RoutingProfile:
    """Run ``prompts`` (chat messages, as in the training data) through ``model`` and tally its routers."""
    routers = moe_routers(model, "trainer.lora.expert_selection")
    if not routers:
        raise K2RLError(f"trainer.lora.expert_selection: needs an MoE policy; {model_type(model)!r} has no routers")
    num_experts = routers[0][1].weight.shape[0]
    gate = np.zeros((len(routers), num_experts))
    share = np.zeros((len(routers), num_experts))
    real = {"mask": None}  # the current batch's non-padding tokens, flattened as the router sees them

    def tally(row: int):
        def hook(module, args, output):
            _, weights, indices = output
            mask = real["mask"]
            weights, indices = weights[mask].float(), indices[mask]
            weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-20)
            gate[row] += torch.zeros(num_experts).index_add_(0, indices.reshape(-1), weights.reshape(-1)).numpy()
            share[row] += torch.bincount(indices.reshape(-1), minlength=num_experts).numpy() / indices.shape[-1]

        return hook

    handles = [router.register_forward_hook(tally(row)) for row, (_, router) in enumerate(routers)]
    was_training = model.training
    model.eval()
    tokens = 0
    try:
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            real["mask"] = enc["attention_mask"].reshape(-1).bool()
            tokens += int(real["mask"].sum())
            model(input_ids=enc["input_ids"].to(model.device), attention_mask=enc["attention_mask"].to(model.device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return RoutingProfile([layer for layer, _ in routers], gate / max(tokens, 1), share / max(tokens, 1), tokens)


def plot_profile(profile: RoutingProfile, selection: dict[int, list[int]] | None, score: str, out_png: Path) -> None:
    """Heat map of relevance (experts x layers), selected experts outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    relevance = profile.relevance(score)
    num_layers, num_experts = relevance.shape
    fig, ax = plt.subplots(figsize=(min(4 + num_experts * 0.12, 24), 1.5 + 0.6 * num_layers))
    image = ax.imshow(relevance, aspect="auto", cmap="viridis", interpolation="nearest")
    if selection:
        for row, layer in enumerate(profile.layers):
            cols = selection.get(layer, [])
            ax.scatter(cols, [row] * len(cols), marker="s", s=18, facecolors="none", edgecolors="red", linewidths=0.8)
    ax.set_yticks(range(num_layers), [f"layer {layer}" for layer in profile.layers])
    ax.set_xlabel("routed expert")
    chosen = sum(len(v) for v in (selection or {}).values())
    title = f"routing profile ({score} relevance, {profile.tokens} prompt tokens)"
    if selection:
        title += f"; red: {chosen} of {num_layers * num_experts} experts adapted"
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def select_for_run(model, tokenizer, train_dataset, config, run_dir: Path) -> dict[int, list[int]] | None:
    """The recipe's expert selection (None: adapt all routed experts), profiled once per run.

    ``config`` is the recipe's ``trainer.lora.expert_selection``. The profile and the selection are
    written to ``run_dir``; a resumed run reads them back instead of profiling again.
    """
    if config.threshold_p is None:
        return None
    layout = RunLayout(run_dir)
    path = layout.routing_profile
    if from_main(path.exists):  # one answer for all processes: the main one may be writing it
        profile = RoutingProfile.load(path)
    else:
        count = min(config.profile_prompts, len(train_dataset))
        profile = profile_routing(model, tokenizer, train_dataset.select(range(count))["prompt"])
        if is_main():
            profile.save(path)
    selection = profile.select(config.threshold_p, config.score)
    total = profile.gate.size
    chosen = sum(len(experts) for experts in selection.values())
    summary = {"threshold_p": config.threshold_p, "score": config.score, "adapted": chosen, "of": total, "experts": selection}
    if is_main():  # every process profiles the same prompts with the same model; one writes
        layout.expert_selection.write_text(json.dumps(summary) + "\n")
        plot_profile(profile, selection, config.score, layout.routing_profile_plot)
    return selection
