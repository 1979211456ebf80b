"""Where a fact is looked up: the subject's last token, under the edit prompt and context prefixes.

Locate-then-edit methods read keys and write values at the last token of the subject (ROME and
MEMIT's ``subject_last``), because causal tracing found the fact recalled there. A prompt is also
read behind a few short generated prefixes, so the edit holds whatever text comes before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ...core.records import EditRecord
from ...core.tokenize import EncodedPair, PairBatch, PairEncoder

#: The words the published code starts its generated context prefixes with.
PREFIX_STARTS = ("The", "Therefore", "Because", "I", "You")


def subject_last_index(encoder: PairEncoder, text: str, subject: str, start: int = 0) -> int:
    """Token index of the last token of the first ``subject`` at or after character ``start``.

    The text up to the end of the subject is tokenised on its own, as ROME does, so the index is
    that of the token the model has just read when the subject ends; under a prompt format it is
    counted in the shown text (a chat template's header first).
    """
    at = text.find(subject, start)
    if at < 0:
        raise ValueError(f"the subject {subject!r} does not occur in the prompt {text[start:]!r}")
    return encoder.tokens_through(text, at + len(subject)) - 1


@torch.no_grad()
def generate_prefixes(model: nn.Module, encoder: PairEncoder, n: int, length: int,
                      seed: int, device: torch.device) -> tuple[str, ...]:
    """``n`` short texts sampled from the model (top-5, ``length`` tokens in all, starting with the
    published start words), each ending in ". " so a prompt can follow. Seeded, so a resumed run
    regenerates the same ones."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    prefixes = []
    for i in range(n):
        ids = encoder.encode_text(PREFIX_STARTS[i % len(PREFIX_STARTS)])
        while len(ids) < length:
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float().cpu()
            top = torch.topk(logits, k=min(5, logits.numel()))
            choice = torch.multinomial(torch.softmax(top.values, -1), 1, generator=generator)
            ids.append(int(top.indices[choice]))
        text = encoder.tokenizer.decode(ids[len(encoder.prefix):], skip_special_tokens=True)
        prefixes.append(text.replace("\n", " ").strip() + ". ")
    return tuple(prefixes)


@dataclass
class LocatedBatch:
    """Padded rows, each with the token position of its subject's last token and the record it
    belongs to; ``rows`` is what the model reads, ``lookup[i]`` where row ``i`` is read or
    written."""

    rows: PairBatch
    lookup: torch.Tensor
    owner: torch.Tensor  # record index of each row
    group: torch.Tensor  # 0: the bare prompt, 1: behind a generated prefix, 2: the KL prompt

    def to(self, device: torch.device) -> LocatedBatch:
        return LocatedBatch(self.rows.to(device), self.lookup.to(device), self.owner.to(device),
                            self.group.to(device))


def locate(encoder: PairEncoder, records: Sequence[EditRecord], prefixes: Sequence[str],
           with_target: bool, kl_prompt: bool = False) -> LocatedBatch:
    """Rows for each record: the bare prompt, then the prompt behind every prefix (with the new
    target appended when ``with_target``), then optionally "{subject} is a" for the KL term."""
    pairs: list[EncodedPair] = []
    lookup, owner, group = [], [], []
    for index, record in enumerate(records):
        for kind, prefix in [(0, "")] + [(1, p) for p in prefixes]:
            text = prefix + record.prompt
            if with_target:
                pairs.append(encoder.encode(text, record.target_new))
            else:
                ids = encoder.encode_prompt(text)
                pairs.append(EncodedPair(tuple(ids), len(ids)))
            lookup.append(subject_last_index(encoder, text, record.subject, len(prefix)))
            owner.append(index)
            group.append(kind)
        if kl_prompt:
            ids = encoder.encode_prompt(f"{record.subject} is a")
            pairs.append(EncodedPair(tuple(ids), len(ids)))
            lookup.append(subject_last_index(encoder, record.subject, record.subject))
            owner.append(index)
            group.append(2)
    return LocatedBatch(
        encoder.collate(pairs), torch.tensor(lookup), torch.tensor(owner), torch.tensor(group)
    )
