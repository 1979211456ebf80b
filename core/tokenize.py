"""Turning (prompt, target) pairs into padded, teacher-forced batches.

Probes and every method that trains on targets share this, so "which positions predict the
target" is defined once: the target follows the prompt after one space (the ROME/MEMIT and MEND
convention), and its tokens are found by tokenizing the joined text, so tokenizers that merge
across the boundary still get the ids the model would actually see. What the model is shown of
a prompt (raw, a chat template, a question, behind solved examples) is the encoder's
:class:`~.prompts.PromptFormat`; the target follows the shown prompt after its ``separator``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from .prompts import RAW, PromptFormat, check_chat_template


@dataclass(frozen=True)
class EncodedPair:
    ids: tuple[int, ...]
    n_prompt: int  # tokens before the first target token

    @property
    def n_target(self) -> int:
        return len(self.ids) - self.n_prompt


@dataclass
class PairBatch:
    """A padded batch, on the right unless made with ``collate(left=True)``. ``target_mask[b, i]``
    marks positions whose logits predict a target token (the token at ``labels[b, i]``);
    ``prompt_last[b]`` is the last prompt position."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    target_mask: torch.Tensor
    prompt_last: torch.Tensor

    def _fields(self) -> tuple[torch.Tensor, ...]:
        return self.input_ids, self.attention_mask, self.labels, self.target_mask, self.prompt_last

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(*(t.to(device) for t in self._fields()))

    def rows(self, start: int, stop: int) -> PairBatch:
        """Rows ``start`` to ``stop`` (exclusive) of the batch."""
        return PairBatch(*(t[start:stop] for t in self._fields()))


def pad(sequences: Sequence[Sequence[int]], pad_id: int,
        left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of token sequences padded to the longest: on the right for
    scoring and training, on the left for generation (new tokens then follow every prompt)."""
    width = max(len(seq) for seq in sequences)
    rows = [[pad_id] * (width - len(seq)) + list(seq) if left
            else list(seq) + [pad_id] * (width - len(seq))
            for seq in sequences]
    lengths = torch.tensor([len(seq) for seq in sequences], dtype=torch.long).unsqueeze(1)
    positions = torch.arange(width).unsqueeze(0)
    mask = positions >= width - lengths if left else positions < lengths
    return torch.tensor(rows, dtype=torch.long), mask.long()


def token_budget_batches(lengths: Sequence[int], budget: int,
                         by_length: bool = True) -> Iterator[list[int]]:
    """Indices grouped so that each padded batch (rows x its longest sequence) holds at most
    ``budget`` tokens (a longer sequence goes alone). ``by_length`` sorts first, so that batches
    hold sequences of similar length and padding is small; otherwise the order is kept."""
    order = (sorted(range(len(lengths)), key=lengths.__getitem__) if by_length
             else range(len(lengths)))
    batch: list[int] = []
    width = 0
    for index in order:
        wider = max(width, lengths[index])
        if batch and wider * (len(batch) + 1) > budget:
            yield batch
            batch, wider = [], lengths[index]
        batch.append(index)
        width = wider
    if batch:
        yield batch


class PairEncoder:
    """Encodes pairs for one tokenizer and prompt format, keeping leading special tokens (BOS)
    once: the tokenizer's own, or those a chat template writes."""

    CACHE_LIMIT = 1_000_000  # pairs; a lifelong run re-scores the same pairs at every checkpoint

    def __init__(self, tokenizer, prompt_format: PromptFormat = RAW) -> None:
        self.tokenizer = tokenizer
        self.format = prompt_format
        if prompt_format.name == "chat":
            check_chat_template(tokenizer)
        with_specials = tokenizer("x")["input_ids"]
        without = tokenizer("x", add_special_tokens=False)["input_ids"]
        self.prefix = list(with_specials[: len(with_specials) - len(without)])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._cache: dict[tuple[str, str], EncodedPair] = {}

    def _ids(self, text: str) -> list[int]:
        return self._ids_many([text])[0]

    def _ids_many(self, texts: Sequence[str], specials: bool = True) -> list[list[int]]:
        """One tokenizer call for many texts: fast tokenizers encode a list in one Rust call, which
        is most of what batched scoring saves over a call per record. ``specials``: the
        tokenizer's leading special tokens in front (not for a text that writes its own)."""
        if not texts:
            return []
        backend = (getattr(self.tokenizer, "backend_tokenizer", None)
                   if getattr(self.tokenizer, "is_fast", False) else None)
        if backend is not None and backend.truncation is None and backend.padding is None:
            # what the wrapper's call does for a fast tokenizer, without its per-text Python
            # conversion
            encoded = [e.ids for e in backend.encode_batch(list(texts), add_special_tokens=False)]
        else:
            encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        prefix = self.prefix if specials else []
        return [prefix + list(ids) for ids in encoded]

    def _shown_ids(self, shown: Sequence[str]) -> list[list[int]]:
        return self._ids_many(shown, specials=not self.format.own_special_tokens)

    def shown(self, prompt: str) -> str:
        """The text the model is shown for ``prompt`` under the encoder's format."""
        return self.format.render(prompt, self.tokenizer)

    def encode_text(self, text: str) -> list[int]:
        """Plain text as it is, whatever the format (a corpus, the start of a generated prefix)."""
        return self._ids(text)

    def encode_prompt(self, prompt: str) -> list[int]:
        """The ids the model reads for ``prompt`` (what generation starts from)."""
        return self._shown_ids([self.shown(prompt)])[0]

    def tokens_through(self, prompt: str, end: int) -> int:
        """How many tokens the model has read of ``prompt``'s shown text when it has read
        ``prompt[:end]`` (the text up to there tokenized on its own, as ROME finds a subject)."""
        at = 0 if self.format.is_raw else self.format.offset(prompt, self.tokenizer)
        return len(self._shown_ids([self.shown(prompt)[: at + end]])[0])

    def generated_text(self, prompt: str, prompt_ids: Sequence[int],
                       new_ids: Sequence[int]) -> str:
        """A generation as text: the prompt and its continuation. Raw, the two are decoded
        together; under another format the caller's prompt is kept in front of the decoded
        continuation, so the text holds no template."""
        decode = self.tokenizer.decode
        if self.format.is_raw:
            return decode(list(prompt_ids) + list(new_ids), skip_special_tokens=True)
        return f"{prompt} {decode(list(new_ids), skip_special_tokens=True).lstrip()}"

    def encode(self, prompt: str, target: str) -> EncodedPair:
        return self.encode_many([(prompt, target)])[0]

    def encode_many(self, pairs: Sequence[tuple[str, str]]) -> list[EncodedPair]:
        """Encode (prompt, target) pairs, tokenizing the ones not cached yet in one batch."""
        missing = list(dict.fromkeys(key for key in pairs if key not in self._cache))
        shown = [self.shown(prompt) for prompt, _ in missing]
        prompt_ids = self._shown_ids(shown)
        full_ids = self._shown_ids([f"{text}{self.format.separator}{target}"
                                    for text, (_, target) in zip(shown, missing)])
        fresh = {key: self._join(key, p, f)
                 for key, p, f in zip(missing, prompt_ids, full_ids, strict=True)}
        if len(self._cache) + len(fresh) <= self.CACHE_LIMIT:
            self._cache.update(fresh)
        return [fresh[key] if key in fresh else self._cache[key] for key in pairs]

    def _join(self, key: tuple[str, str], prompt_ids: list[int], full: list[int]) -> EncodedPair:
        if full[: len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids):
            return EncodedPair(tuple(full), len(prompt_ids))
        # the tokenizer merged across the boundary: fall back to separate pieces
        prompt, target = key
        target_ids = self.tokenizer(self.format.separator + target,
                                    add_special_tokens=False)["input_ids"]
        if not target_ids:
            raise ValueError(f"target {target!r} of prompt {prompt!r} tokenizes to nothing")
        return EncodedPair(tuple(prompt_ids + list(target_ids)), len(prompt_ids))

    def collate(self, pairs: Sequence[EncodedPair], left: bool = False,
                pad_id: int | None = None) -> PairBatch:
        """Pad (on the right; ``left`` for a method that trains as its release does on a
        left-padded batch, with that release's ``pad_id``) and derive every mask from lengths in
        whole-tensor operations."""
        input_ids, attention_mask = pad([p.ids for p in pairs],
                                        self.pad_id if pad_id is None else pad_id, left=left)
        width = input_ids.shape[1]
        lengths = attention_mask.sum(1, keepdim=True)
        start = width - lengths if left else torch.zeros_like(lengths)  # each row's first token
        prompt_last = start.squeeze(1) + torch.tensor([p.n_prompt - 1 for p in pairs])
        positions = torch.arange(width).unsqueeze(0)
        # positions whose next token is a real one
        predicts = (positions >= start) & (positions < start + lengths - 1)
        labels = torch.zeros_like(input_ids)
        labels[:, :-1] = input_ids[:, 1:]
        labels[~predicts] = 0
        target_mask = predicts & (positions >= prompt_last.unsqueeze(1))
        return PairBatch(input_ids, attention_mask, labels, target_mask, prompt_last)
