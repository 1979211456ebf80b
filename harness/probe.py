"""The probe interface: score many (prompt, target) pairs at once.

Like lm-evaluation-harness's ``loglikelihood``, everything the runner measures is built on one
batched call. A backend returns, per pair, teacher-forced top-1 token accuracy of the target, its
summed log-probability and the argmax tokens. The Hugging Face backend lives here; other backends
(vLLM) implement the same protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

from .progress import progress
from .records import PairScore, ScoringPair
from .tokenize import PairEncoder


class ProbeBackend(Protocol):
    def score(self, pairs: Sequence[ScoringPair]) -> list[PairScore]: ...


def target_logprobs(model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward a PairBatch; return (label log-probs, argmax ids, row index) at target positions.

    Only target positions are put through log-softmax, which keeps memory at N x vocab rather
    than batch x length x vocab for large vocabularies.
    """
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    picked = logits[batch.target_mask].float()
    logprobs = torch.log_softmax(picked, dim=-1)
    labels = batch.labels[batch.target_mask]
    label_logprobs = logprobs.gather(1, labels.unsqueeze(1)).squeeze(1)
    rows = batch.target_mask.nonzero()[:, 0]
    return label_logprobs, picked.argmax(dim=-1), rows


class HFProbe:
    """Scores pairs with a (possibly edited, live) Hugging Face model, sorted by length and padded."""

    def __init__(self, model: nn.Module, tokenizer, device: torch.device, max_tokens: int = 8192) -> None:
        self.model = model
        self.encoder = PairEncoder(tokenizer)
        self.device = device
        self.max_tokens = max_tokens

    def _batches(self, encoded):
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
        batch: list[int] = []
        width = 0
        for index in order:
            width = max(width, len(encoded[index].ids))
            if batch and width * (len(batch) + 1) > self.max_tokens:
                yield batch
                batch, width = [], len(encoded[index].ids)
            batch.append(index)
        if batch:
            yield batch

    @torch.inference_mode()
    def score(self, pairs: Sequence[ScoringPair]) -> list[PairScore]:
        encoded = [self.encoder.encode(p.prompt, p.target) for p in pairs]
        results: list[PairScore | None] = [None] * len(pairs)
        was_training = self.model.training
        self.model.eval()
        batches = list(self._batches(encoded))
        for indices in progress(batches, desc="scoring", unit="batch", disable=len(batches) < 4):
            batch = self.encoder.collate([encoded[i] for i in indices]).to(self.device)
            label_lp, argmax, rows = target_logprobs(self.model, batch)
            correct = argmax == batch.labels[batch.target_mask]
            label_lp, argmax, rows, correct = (t.cpu() for t in (label_lp, argmax, rows, correct))
            for row, index in enumerate(indices):
                sel = rows == row
                n = int(sel.sum())
                results[index] = PairScore(
                    token_accuracy=float(correct[sel].float().mean()) if n else 0.0,
                    logprob=float(label_lp[sel].sum()),
                    n_tokens=n,
                    predictions=tuple(int(t) for t in argmax[sel]),
                )
        self.model.train(was_training)
        return results  # type: ignore[return-value]
