"""Chosen failure points for the fault-injection tests (``tests/test_faults*.py``).

``EDITBENCH_FAULT=POINT[:N[:ACTION]]`` acts the ``N``-th time (default: the first) this process
reaches ``POINT``. ``ACTION`` is ``exit`` (default: end the process at once with ``os._exit``, as a
kill would: no ``finally`` block, no flush, no cleanup) or ``stop`` (the process sends itself
SIGSTOP and waits there, still holding its locks, until it gets SIGCONT). Unset, it costs one
environment lookup per point. The points:

- ``snapshot-staged``: a snapshot's files are written to its staging folder, not yet renamed;
- ``after-snapshot``: the snapshot is in place, its checkpoint not yet committed to the store;
- ``in-checkpoint``: inside the checkpoint's store transaction, rows written, not committed;
- ``after-checkpoint``: the checkpoint is committed, older snapshots not yet removed;
- ``pocket-training``: one step of the pocket model's training (``N`` counts steps).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

POINTS = ("snapshot-staged", "after-snapshot", "in-checkpoint", "after-checkpoint",
          "pocket-training")
#: the exit status of a process ended at a fault point, so a test can tell it from a crash
FAULT_EXIT = 86

_reached: Counter[str] = Counter()


def fault_point(point: str) -> None:
    """Act here if ``EDITBENCH_FAULT`` names ``point`` and this is its ``N``-th visit."""
    wanted = os.environ.get("EDITBENCH_FAULT")
    if not wanted:
        return
    name, _, rest = wanted.partition(":")
    if name != point:
        return
    count, _, action = rest.partition(":")
    _reached[point] += 1
    if _reached[point] != int(count or 1):
        return
    if action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    os._exit(FAULT_EXIT)
