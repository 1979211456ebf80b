"""The language-model head run only where a target-token loss reads it (issue 28).

A fine-tuning step's loss (FT-M's, LocFT-BF's: ``objectives.masked_target_nll``) reads the logits at
the positions that predict a target token and nowhere else, yet the model computes the head, and
the step then takes the log-softmax and its backward, at every position of the padded batch. On
the pocket model (a 1,000-token vocabulary over a width of 128) that was 37% of a LocFT-BF step:
the head's two products and the log-softmax at 12 positions where 2 or 3 are read. Below, a
forward pre-hook on the head hands it only those positions, each row's in order, and the loss is
computed on the batch narrowed to them (:func:`narrowed`).

Why the numbers do not move: the rows kept are the rows the loss read, each computed from the same
hidden state by the same product; the rows dropped had a zero gradient, so nothing they held
reached a weight. What can change is float rounding where a kernel's order of summation depends on
the number of rows; on the CPUs measured the default run's stored values were bitwise the same
(``tests/test_answer_positions.py`` checks the losses and gradients within rounding).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..core.tokenize import PairBatch


@dataclass(frozen=True)
class AnswerPositions:
    """``index[b, j]``: the position of row ``b``'s ``j``-th read position (rows with fewer are
    filled with positions not read; None: every position, nothing to narrow); ``batch``: what a
    target-token loss reads of the batch at those positions: ``labels`` and ``target_mask``
    narrowed to them, the other fields the whole batch's (a loss that groups rows by length reads
    it from ``attention_mask``, ``objectives.sub_batch_target_nll``)."""

    index: torch.Tensor | None
    batch: PairBatch

    def read(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` checked to be the narrowed ones ``batch`` describes. A model that made its
        logits without calling its output head module (so ``head_at``'s hook never ran) returns
        every position, which a loss would misread against the narrowed labels: refused."""
        if self.index is not None and logits.shape[1] != self.index.shape[1]:
            raise ValueError(
                f"the model returned logits at {logits.shape[1]} positions, not the "
                f"{self.index.shape[1]} its output head was to be given: it does not compute them "
                "through its output head module (get_output_embeddings)")
        return logits

    def logits(self, model: nn.Module, forward: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The logits ``forward`` (a pass of ``model``) makes with the head at these positions
        (``head_at``), checked (``read``): what a loss reads with ``batch``."""
        with head_at(model, self):
            return self.read(forward())

    def column(self, positions: torch.Tensor) -> torch.Tensor:
        """Where each row's position in ``positions`` (one per row, among those kept) sits in the
        narrowed logits."""
        if self.index is None:
            return positions
        return (self.index == positions.unsqueeze(1)).to(torch.int8).argmax(1)


def narrowed(batch: PairBatch, reading: torch.Tensor | None = None) -> AnswerPositions:
    """The positions of ``batch`` a loss reads: its target-predicting ones, or those of the
    ``reading`` mask (rows, positions), which holds them and more (MEMIT's KL prompts read their
    subject's last token); all of them where they fill the whole width (no position to save)."""
    reading = batch.target_mask.bool() if reading is None else reading
    width = int(reading.sum(1).max())
    if width >= reading.shape[1]:
        return AnswerPositions(index=None, batch=batch)
    # each row's read positions first, in their order (a stable sort of "not read")
    index = torch.argsort((~reading).to(torch.int8), dim=1, stable=True)
    index = index[:, :max(width, 1)]
    return AnswerPositions(index=index, batch=PairBatch(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        labels=batch.labels.gather(1, index),
        target_mask=batch.target_mask.gather(1, index),
        prompt_last=batch.prompt_last,
    ))


def at_prompt_last(batch: PairBatch) -> AnswerPositions:
    """The prompt's last position of each row alone, which ROME's FT-L loss reads for every target
    token (``objectives.last_prompt_position_nll``): the narrowed batch's ``prompt_last`` is that
    position's column, 0; its labels and target mask stay whole, as that loss reads them."""
    return AnswerPositions(index=batch.prompt_last.unsqueeze(1),
                           batch=replace(batch, prompt_last=torch.zeros_like(batch.prompt_last)))


@contextmanager
def head_at(model: nn.Module, positions: AnswerPositions):
    """While inside, the model's output head sees only ``positions``' rows of its input, so the
    logits are ``(rows, narrowed width, vocabulary)``. A head input of another shape (a model that
    calls its head otherwise) raises rather than narrow the wrong rows."""
    head = model.get_output_embeddings() if positions.index is not None else None
    if head is None:
        yield
        return
    index = positions.index

    def narrow(_module, args):
        hidden = args[0]
        if hidden.dim() != 3 or hidden.shape[0] != index.shape[0]:
            raise ValueError(f"the output head got an input of shape {tuple(hidden.shape)}, not "
                             f"the batch's ({index.shape[0]} rows, positions, width)")
        picked = hidden.gather(1, index.unsqueeze(2).expand(-1, -1, hidden.shape[2]))
        return (picked, *args[1:])

    handle = head.register_forward_pre_hook(narrow)
    try:
        yield
    finally:
        handle.remove()
