"""Closed-loop critic refinement: keep the self-critic grounded on prompts that have a verifier.

A critic that judges its own policy can drift as the policy changes. On verifiable prompts the run
already knows, for every pair where exactly one sample passed the verifier, which sample is better;
the ``rubric`` reward turns those pairs into labelled critic prompts (both orders, core rubrics) and
hands them here with :meth:`CriticRefinement.add`.

Two ways the critic learns from them (``critic.refine_adapter``):

- ``shared`` (K2 style, the same weights): the trainer adds ``weight x`` the cross-entropy of the
  correct verdict (``Verdict: A`` / ``Verdict: B``, teacher-forced after the critic prompt) to the
  policy's GRPO loss, through the same expert adapters. No model or optimizer of its own; each batch
  of labels trains once, in the optimizer step after it was produced.
- ``own``: the critic judges with the policy's adapter plus a delta of its own, which
  :mod:`k2rl.critic.adapter` trains with its own optimizer, several steps per RL step, on a replay
  of labelled verdicts (:meth:`CriticRefinement.draw`, :mod:`k2rl.critic.replay`). It still reads
  with the live policy's weights, so it does not drift away from the policy it judges.

``critic/agreement`` (logged by the reward every step) shows whether the loop works.
"""

from __future__ import annotations

import random
import threading
import time

import torch
import torch.nn.functional as F

from k2rl.critic.replay import LabelReplay


class CriticRefinement:
    """Buffer of labelled critic prompts from the latest batch, and the auxiliary loss they define."""

    name = "critic/refine_loss"

    def __init__(
        self, weight: float, max_examples: int, seed: int = 0, answer_prefix: str = "", replay: int = 0, reservoir: int = 0
    ):
        self.weight, self.max_examples = weight, max_examples
        # The critic's answer starts with this text, prefilled at judging time: it is never generated,
        # so it is part of the context here too, and the loss falls on the verdict alone.
        self.answer_prefix = answer_prefix
        self.tokenizer = None
        self._pending: list[tuple[list[dict], str]] = []
        # With ``replay``: the most recent labelled verdicts, plus a ``reservoir`` sample of all of them
        # (sizes in verdicts; the replay holds comparisons, two verdicts each).
        self._replay = LabelReplay(max(replay // 2, 1), reservoir // 2, seed) if replay else None
        self._rng = random.Random(seed)
        self._lock = threading.Lock()  # rewards may run on a timeout thread
        self.trained_examples = 0
        self.seconds = 0.0  # time spent in the auxiliary forward so far (its backward runs with the policy's)

    def bind(self, tokenizer) -> CriticRefinement:
        self.tokenizer = tokenizer
        return self

    def add(self, examples: list[tuple[list[dict], str]]) -> None:
        """Labels from the newest rollouts; they replace older unused ones (kept on-policy), at most ``max_examples``.

        With ``replay`` they join the replay instead (:class:`k2rl.critic.replay.LabelReplay`).

        ``examples`` come as order pairs: each comparison shown both ways, consecutively (winner as A,
        then winner as B). Subsampling keeps the two together, so every step trains as many "A" as
        "B" labels on the same contents: a gradient step cannot lower the loss by moving the critic
        towards one letter (the position bias that leaves a small critic answering the same letter in
        both orders), only by reading which response is which.
        """
        pairs = [tuple(examples[i : i + 2]) for i in range(0, len(examples), 2)]
        if self._replay is not None:
            with self._lock:
                self._replay.add(pairs)
            return
        if len(pairs) > self._comparisons_per_batch:
            pairs = self._rng.sample(pairs, self._comparisons_per_batch)
        with self._lock:
            self._pending = [example for pair in pairs for example in pair]

    def __call__(self, model) -> torch.Tensor | None:
        """``weight x`` mean verdict cross-entropy on the pending labels (consumed), or None if there are none."""
        with self._lock:
            examples, self._pending = self._pending, []
        if not examples or self.weight == 0:
            return None
        return self.weight * self.loss(model, examples)

    @property
    def replayed(self) -> int:
        """Labelled verdicts held for replay (0 without ``replay``)."""
        return 2 * len(self._replay) if self._replay is not None else 0

    def draw(self) -> list[tuple[list[dict], str]]:
        """Up to ``max_examples`` labelled verdicts from the replay, both orders of each comparison together."""
        if self._replay is None:
            raise RuntimeError("CriticRefinement.draw needs replay > 0")
        with self._lock:
            pairs = self._replay.draw(self._comparisons_per_batch)
        return [example for pair in pairs for example in pair]

    @property
    def _comparisons_per_batch(self) -> int:
        return max(self.max_examples // 2, 1)

    def replay_state(self) -> dict:
        """The replay as plain JSON-able data (for checkpoints)."""
        with self._lock:
            return self._replay.state() if self._replay is not None else {}

    def load_replay_state(self, state: dict) -> None:
        with self._lock:
            self._replay.load_state(state)

    def loss(self, model, examples: list[tuple[list[dict], str]]) -> torch.Tensor:
        """Mean over ``examples`` of the verdict's negative log-likelihood under ``model`` (teacher-forced)."""
        if self.tokenizer is None:
            raise RuntimeError("CriticRefinement used before bind(tokenizer)")
        started = time.perf_counter()
        rows, targets = [], []
        for messages, answer in examples:
            prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            if self.answer_prefix and answer.startswith(self.answer_prefix):
                prompt, answer = prompt + self.answer_prefix, answer[len(self.answer_prefix) :]
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            full_ids = self.tokenizer(prompt + answer + self.tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            rows.append(full_ids)
            targets.append(len(prompt_ids))
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        device = next(model.parameters()).device
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, start) in enumerate(zip(rows, targets)):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            labels[i, start : len(ids)] = torch.tensor(ids[start:])
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
        labels = labels[:, 1:].to(device)
        token_nll = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=-100, reduction="none"
        ).view(labels.shape)
        # Per example, the verdict's whole negative log-likelihood (sum over its tokens), then the mean
        # over examples. A mean over tokens would dilute the one token that carries the judgment (the
        # letter) with the predictable ones around it (the space, end of turn).
        loss = token_nll.sum(dim=1).mean()
        self.trained_examples += len(rows)
        self.seconds += time.perf_counter() - started
        return loss
