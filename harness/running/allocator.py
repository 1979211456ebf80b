"""glibc's allocator, set for a process that allocates tensors all day (issue 34: the run's time).

torch's CPU tensors come from ``malloc``. glibc serves a block above its mmap threshold (128 KiB at
first, raised as such blocks are freed, up to 32 MiB) with a fresh ``mmap`` and gives it back with
``munmap`` when freed, and trims the heap top once 128 KiB are free there; each new mapping is
zeroed page by page by the kernel. A run makes the same activation-sized tensors thousands of
times, so it spent about a tenth of its CPU time in the kernel doing that: on these 2 cores
(2026-12-05) ``editbench run --methods ft-m,retrieval --jobs 1`` took 38.7-40.6 s wall with 3.8-5.0
s of system time, and 35.3-36.3 s with 0.6 s once the thresholds below were fixed, at the same
peak resident memory (671 MB against 674 MB). Allocation never changes a computed value.

The settings: blocks up to 32 MiB (glibc's own upper bound for its moving threshold) come from
the heap; the heap keeps up to 256 MiB free at its top and grows 64 MiB at a time. A block above
32 MiB (a large model's weights, its logits) is still mapped on its own and returned when freed.
A variable the user set (``MALLOC_MMAP_THRESHOLD_`` and the others below, read by glibc when the
process starts) wins over the matching setting. Elsewhere than glibc on Linux it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

MIB = 1 << 20
#: (mallopt parameter, value, the environment variable that sets it at start-up)
SETTINGS = (
    (-3, 32 * MIB, "MALLOC_MMAP_THRESHOLD_"),  # M_MMAP_THRESHOLD
    (-1, 256 * MIB, "MALLOC_TRIM_THRESHOLD_"),  # M_TRIM_THRESHOLD
    (-2, 64 * MIB, "MALLOC_TOP_PAD_"),  # M_TOP_PAD
)

_done = False


def tune_allocator() -> bool:
    """Apply :data:`SETTINGS` to this process once (later calls do nothing); True where glibc took
    them."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (glibc's alone: musl's mallopt does nothing)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    for parameter, value, variable in SETTINGS:
        if variable not in os.environ and mallopt(parameter, value) != 1:
            log.debug("mallopt(%d, %d) was refused", parameter, value)
    _done = True
    return True
