"""Generation backends: turn token contexts into sampled continuations with their log-probabilities.

The engine asks one thing of a backend: ``generate(contexts, max_new_tokens, sampling)`` -> for each
context, the new token ids (ending with the end-of-turn token when the turn finished) and the
log-probability of each sampled token under the sampling distribution.

- :class:`TransformersBackend` (default, CPU or one GPU): ``model.generate`` with the expert
  adapters folded in for the call (:func:`k2rl.experts.lora.merged_expert_adapters`).
- :class:`VLLMBackend`: TRL's vLLM integration (``use_vllm=True``, server or colocate mode); TRL
  pushes the merged weights before each step. **Not run in this repository's CPU CI**; see
  :mod:`k2rl.rollouts.vllm_sync` for the fused-expert weight check.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from k2rl.experts.lora import merged_expert_adapters


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class TransformersBackend:
    """``model.generate`` on left-padded batches; stops each row at its own end-of-turn token."""

    def __init__(self, model, tokenizer, batch_size: int | None = None):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self._merged = False
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id

    @contextlib.contextmanager
    def session(self):
        """Fold the expert adapters in once for many ``generate`` calls (one engine run: every turn, every chunk).

        Merging rebuilds every expert's delta, which costs more than a short generation call.
        """
        if self._merged:
            yield
            return
        with merged_expert_adapters(self.model):
            self._merged = True
            try:
                yield
            finally:
                self._merged = False

    @torch.no_grad()
    def generate(self, contexts: list[list[int]], max_new_tokens: list[int], sampling: Sampling):
        step = self.batch_size or len(contexts)
        out = []
        with self.session():
            for start in range(0, len(contexts), step):
                out += self._generate_chunk(contexts[start:start + step], max_new_tokens[start:start + step], sampling)
        return out

    def _generate_chunk(self, contexts, max_new_tokens, sampling):
        device = next(self.model.parameters()).device
        width = max(len(c) for c in contexts)
        input_ids = torch.tensor([[self.pad_id] * (width - len(c)) + c for c in contexts], device=device)
        attention = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts], device=device)
        options = {"do_sample": False} if sampling.greedy else {
            "do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": sampling.top_k or 0}
        generated = self.model.generate(
            input_ids=input_ids, attention_mask=attention, max_new_tokens=max(max_new_tokens),
            eos_token_id=self.eos_id, pad_token_id=self.pad_id, output_scores=True,
            return_dict_in_generate=True, **options,
        )
        new = generated.sequences[:, width:]
        logps = torch.stack(generated.scores, dim=1).float().log_softmax(-1)  # the sampling distribution
        chosen = logps.gather(-1, new[:, : logps.size(1)].unsqueeze(-1)).squeeze(-1)
        results = []
        for row, limit in enumerate(max_new_tokens):
            ids = new[row].tolist()[:limit]
            if self.eos_id in ids:
                ids = ids[: ids.index(self.eos_id) + 1]
            results.append((ids, chosen[row, : len(ids)].tolist()))
        return results


class VLLMBackend:
    """Generation through TRL's vLLM client/engine (``trainer.vllm_generation``); GPU only.

    TRL syncs the (adapter-merged) weights before each step when a ``rollout_func`` is set. vLLM
    samples with the trainer's ``temperature``/``top_p``/``top_k`` and ``max_completion_length``;
    the engine trims each continuation to the row's own allowance afterwards.
    """

    def __init__(self, trainer):
        if not getattr(trainer, "use_vllm", False):
            from k2rl.errors import K2RLError

            raise K2RLError("rollout.backend=vllm needs the trainer built with use_vllm (a GPU and vLLM installed)")
        self.trainer = trainer
        self.eos_id = trainer.processing_class.eos_token_id

    def generate(self, contexts: list[list[int]], max_new_tokens: list[int], sampling: Sampling):
        _, completion_ids, logprobs, _ = self.trainer.vllm_generation.generate(
            prompts=contexts, images=None, num_generations=1)
        results = []
        for ids, lps, limit in zip(completion_ids, logprobs, max_new_tokens, strict=True):
            ids = list(ids)[:limit]
            if self.eos_id in ids:
                ids = ids[: ids.index(self.eos_id) + 1]
            results.append((ids, [lp[0] for lp in lps[: len(ids)]]))
        return results
