"""Measured peak memory of a block of torch work, to check ``editbench plan``'s estimates against.

On CUDA the caching allocator counts every byte it hands out (``torch.cuda.max_memory_allocated``).
On CPU there is no such counter, so :class:`PeakMemory` reads the C library's heap in use
(``mallinfo2``: small blocks plus mmapped ones, where torch's CPU allocator gets its memory) after
every tensor operation, through a dispatch mode. That misses temporaries that live and die inside
one kernel, and counts anything else the process allocates meanwhile; it is a measurement for checks
on small models, not for production runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


def _libc():
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        lib.mallinfo2.restype = _MallInfo2
        return lib
    except (OSError, AttributeError):  # not glibc >= 2.33
        return None


_LIBC = _libc()


def heap_in_use() -> int:
    """Bytes of the C heap in use now (0 where the C library cannot say)."""
    if _LIBC is None:
        return 0
    info = _LIBC.mallinfo2()
    return int(info.uordblks + info.hblkhd)


class PeakMemory(TorchDispatchMode):
    """``with PeakMemory(device) as meter: ...``; then ``meter.peak`` is the most memory held above
    what was held on entry, in bytes."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.device = torch.device(device)
        self.peak = 0
        self._start = 0

    @property
    def available(self) -> bool:
        return self.device.type == "cuda" or _LIBC is not None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self  # no dispatch mode needed: the allocator keeps the peak
        self._start = heap_in_use()
        return super().__enter__()

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._start
            return False
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, heap_in_use() - self._start)
        return out
