"""The blocks below a fine-tuned layer, run once per batch and replayed (issue 28: edit speed).

Fine-tuning one layer (FT-L, FT-M, LocFT-BF) repeats the same few forward passes for every epoch of
a batch, while every weight below the tuned layer stays fixed: the hidden state entering that layer
is the same in each epoch. The releases (EasyEdit, ROME, LocFT) recompute it every time. Here the
first pass over a chunk of records records the output of the block just below the tuned layer, and
later passes over the same records skip the blocks below and start from it. The embeddings, the
masks and the rotary tables around them are still computed (they are cheap), so the model's own
forward runs unchanged from the tuned layer up.

A repeated chunk in the same order (FT-M's ``chunk: 1``, ROME's fixed order) replays exactly the
numbers it recorded. A chunk of the same records in another order (LocFT-BF's epochs reshuffle)
replays the recorded rows in the new order, which equals recomputing them up to the batched
kernels' float rounding (each row's hidden state depends on that row alone).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..core.models import ModelLayout


def _rows(output, index: torch.Tensor):
    """``output`` (a block's: a tensor, or a tuple holding its hidden state first) with its batch
    rows taken in ``index``'s order."""
    if isinstance(output, torch.Tensor):
        return output.index_select(0, index)
    return type(output)(_rows(part, index) if isinstance(part, torch.Tensor) else part
                        for part in output)


def _detached(output):
    if isinstance(output, torch.Tensor):
        return output.detach()
    return type(output)(part.detach() if isinstance(part, torch.Tensor) else part
                        for part in output)


class LowerBlocks:
    """Runs ``forward`` for chunks of records, replaying the blocks below ``layer`` for a chunk
    whose records it has seen (``keys``, one per record, in the chunk's order). Valid while the
    weights below ``layer`` do not change: use one per edit batch (``FineTune.apply``)."""

    def __init__(self, model: nn.Module, layout: ModelLayout, layer: int) -> None:
        self.blocks = [model.get_submodule(layout.block_name(i)) for i in range(layer)]
        # the chunk's records as a set -> (their order when recorded, the last lower block's output)
        self.seen: dict[frozenset, tuple[tuple[Hashable, ...], object]] = {}

    def __call__(self, keys: Sequence[Hashable], forward: Callable[[], torch.Tensor]):
        if not self.blocks or len(set(keys)) != len(keys):
            return forward()
        found = self.seen.get(frozenset(keys))
        if found is None:
            return self._record(tuple(keys), forward)
        order, output = found
        if tuple(keys) != order:
            where = {key: i for i, key in enumerate(order)}
            index = torch.tensor([where[key] for key in keys], device=_device(output))
            output = _rows(output, index)
        with _replaying(self.blocks, output):
            return forward()

    def _record(self, keys: tuple[Hashable, ...], forward: Callable[[], torch.Tensor]):
        recorded = []
        handle = self.blocks[-1].register_forward_hook(
            lambda _module, _args, output: recorded.append(_detached(output))
        )
        try:
            result = forward()
        finally:
            handle.remove()
        self.seen[frozenset(keys)] = (keys, recorded[0])
        return result


def _device(output) -> torch.device:
    return (output if isinstance(output, torch.Tensor) else output[0]).device


@contextmanager
def _replaying(blocks: Sequence[nn.Module], output):
    """Every block below the tuned layer returns the recorded output of the last of them without
    computing: the first tuned block receives it, and the blocks before it pass it along unread."""
    previous = [block.__dict__.get("forward") for block in blocks]  # e.g. an offloading hook's
    for block in blocks:
        block.forward = lambda *args, **kwargs: output
    try:
        yield
    finally:
        for block, forward in zip(blocks, previous):
            if forward is None:
                del block.forward
            else:
                block.forward = forward
