"""Measure the tensor memory a block of code holds at its peak, on any device (CPU included).

:class:`LiveTensors` is a ``TorchDispatchMode``: every tensor an operator returns inside the block
(forward, backward, optimiser and factory calls alike: the autograd engine runs under the same
mode) has its storage counted once, until the storage is freed. Storages that existed before the
block (the model's weights) are counted separately as ``before``. What it cannot see: memory that
is not a tensor storage (allocator caches and fragmentation, CUDA workspaces, Python objects), so a
GPU's ``max_memory_allocated`` reads somewhat higher. Used to check the memory formulas of
``methods/hypernet/memory.py`` on micro models where no GPU is at hand.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveTensors(TorchDispatchMode):
    """Bytes of tensor storages created inside the block that are still alive (``current``) and the
    most at any moment (``peak``), plus ``before``: the storages of ``existing`` (counted once,
    never as new)."""

    def __init__(self, existing: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self._known: set[int] = set()
        self.before = 0
        for tensor in existing:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in self._known:
                self._known.add(storage.data_ptr())
                self.before += storage.nbytes()
        self._live: dict[int, int] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor) and value.device.type != "meta":
                self._count(value)
        return out

    def _count(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        pointer, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or pointer in self._known or pointer in self._live:
            return
        self._live[pointer] = size
        self.current += size
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, pointer)

    def _free(self, pointer: int) -> None:
        self.current -= self._live.pop(pointer, 0)

    @property
    def total_peak(self) -> int:
        """``before`` plus the peak of what the block created."""
        return self.before + self.peak
