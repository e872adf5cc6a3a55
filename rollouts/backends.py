"""Generation backends: turn token contexts into sampled continuations with their log-probabilities.

The engine asks one thing of a backend: ``generate(contexts, max_new_tokens, sampling)`` -> for each
context, the new token ids (ending with the end-of-turn token when the turn finished) and the
log-probability of each sampled token under the sampling distribution.

- :class:`TransformersBackend` (default, CPU or one GPU): ``model.generate`` with the expert
  adapters folded in for the call (:func:`k2rl.experts.lora.merged_expert_adapters`).
- :class:`VLLMBackend`: a vLLM engine in its own process, owned by k2rl (not TRL's ``use_vllm``):
  k2rl pushes the adapted weights itself after each optimizer step (:mod:`k2rl.rollouts.vllm_sync`)
  and checks the engine against the policy (:mod:`k2rl.rollouts.vllm_check`).
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
    """Generation in k2rl's own vLLM engine process (:mod:`k2rl.rollouts.vllm_engine`).

    The engine samples with the same temperature/top-p/top-k and returns the sampled tokens'
    log-probabilities after temperature scaling (vLLM's ``processed_logprobs``), the quantity TRL's
    importance-sampling correction compares with the policy's. :meth:`push` moves the adapted weights
    that changed since the last push (:class:`k2rl.rollouts.vllm_sync.WeightSync`).
    """

    def __init__(self, engine, eos_id: int):
        from k2rl.rollouts.vllm_sync import WeightSync

        self.engine, self.eos_id = engine, eos_id
        self.sync = WeightSync()
        self.last_push: dict = {}

    def generate(self, contexts: list[list[int]], max_new_tokens: list[int], sampling: Sampling):
        outputs = self.engine.generate(contexts, list(max_new_tokens), sampling.temperature, sampling.top_p, sampling.top_k)
        results = []
        for (ids, logprobs), limit in zip(outputs, max_new_tokens, strict=True):
            ids = ids[:limit]
            if self.eos_id in ids:
                ids = ids[: ids.index(self.eos_id) + 1]
            results.append((ids, logprobs[: len(ids)]))
        return results

    def push(self, model) -> dict:
        """Push the adapted weights of ``model`` (the PEFT policy) that changed; what moved, and how long it took."""
        tensors = self.sync.tensors(model)
        report = {"tensors": len(tensors), "megabytes": sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20}
        if tensors:
            report.update(self.engine.push(tensors))
        self.sync.commit()
        self.last_push = report
        return report

    def close(self) -> None:
        self.engine.close()
