"""Turning (prompt, target) pairs into padded, teacher-forced batches.

Probes and every method that trains on targets share this, so "which positions predict the
target" is defined once: the target follows the prompt after one space (the ROME/MEMIT and MEND
convention), and its tokens are found by tokenizing the joined text, so tokenizers that merge
across the boundary still get the ids the model would actually see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EncodedPair:
    ids: tuple[int, ...]
    n_prompt: int  # tokens before the first target token

    @property
    def n_target(self) -> int:
        return len(self.ids) - self.n_prompt


@dataclass
class PairBatch:
    """A right-padded batch. ``target_mask[b, i]`` marks positions whose logits predict a target token
    (the token at ``labels[b, i]``); ``prompt_last[b]`` is the last prompt position."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    target_mask: torch.Tensor
    prompt_last: torch.Tensor

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels,
                                                   self.target_mask, self.prompt_last)))


class PairEncoder:
    """Encodes pairs for one tokenizer, keeping its leading special tokens (BOS) once."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        with_specials = tokenizer("x")["input_ids"]
        without = tokenizer("x", add_special_tokens=False)["input_ids"]
        self.prefix = list(with_specials[: len(with_specials) - len(without)])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._cache: dict[tuple[str, str], EncodedPair] = {}

    def _ids(self, text: str) -> list[int]:
        return self.prefix + list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_prompt(self, prompt: str) -> list[int]:
        return self._ids(prompt)

    def encode(self, prompt: str, target: str) -> EncodedPair:
        key = (prompt, target)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        prompt_ids = self._ids(prompt)
        full = self._ids(f"{prompt} {target}")
        if full[: len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids):
            encoded = EncodedPair(tuple(full), len(prompt_ids))
        else:  # the tokenizer merged across the boundary: fall back to separate pieces
            target_ids = self.tokenizer(" " + target, add_special_tokens=False)["input_ids"]
            if not target_ids:
                raise ValueError(f"target {target!r} of prompt {prompt!r} tokenizes to nothing")
            encoded = EncodedPair(tuple(prompt_ids + list(target_ids)), len(prompt_ids))
        if len(self._cache) < 1_000_000:
            self._cache[key] = encoded
        return encoded

    def collate(self, pairs: Sequence[EncodedPair]) -> PairBatch:
        width = max(len(p.ids) for p in pairs)
        n = len(pairs)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        labels = torch.zeros((n, width), dtype=torch.long)
        target_mask = torch.zeros((n, width), dtype=torch.bool)
        prompt_last = torch.zeros(n, dtype=torch.long)
        for row, pair in enumerate(pairs):
            ids = torch.tensor(pair.ids, dtype=torch.long)
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
            labels[row, : len(ids) - 1] = ids[1:]
            target_mask[row, pair.n_prompt - 1 : len(ids) - 1] = True
            prompt_last[row] = pair.n_prompt - 1
        return PairBatch(input_ids, attention_mask, labels, target_mask, prompt_last)
