"""One CPU thread for a model too small to gain from more.

torch runs every operation on one thread per core by default. A small model's matrices are too
small to split well: the threads wait on each other more than they compute. So once a run's model
is loaded on the CPU, a model under :data:`SMALL_MODEL_PARAMETERS` gets one thread, which is
logged. ``--threads N`` or ``OMP_NUM_THREADS`` set by the user override it.

The count depends only on the model and the user's choice, never on what else runs: scores move
slightly with it (summation order), so a number must not depend on the machine's load. Each run
stores the count it used (``core/numerics.py``). A run of several cells of such a model runs
them side by side, one process per core (``--jobs``, :func:`parallel_cells`); other processes on
one machine are the user's to share out with ``--threads`` (torch's default then oversubscribes
the cores: slower, same scores).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

#: below this many parameters a model runs on one CPU thread, on every machine, in a run of one
#: cell or of many (``--jobs``). The pocket model (1.0M parameters) is under it: one thread made
#: its single-method runs about 1.4x slower than two on the 2-core machines (2026-11-26: the warm
#: default run took 129-140 s on two threads, 181-226 s on one, one cell at a time), but a run of
#: several cells now puts one cell on each core (``--jobs``, ``side_by_side.py``), and the pocket
#: world's scores no longer move with the machine's core count. (500K before 2026-12-05.) The
#: shipped world was trained on 2 threads, and ``editbench artifacts --rebuild`` trains on the
#: count its manifest records, whatever this rule says.
SMALL_MODEL_PARAMETERS = 2_000_000

_explicit: bool | None = None


def mark_explicit(chosen: bool) -> None:
    """The CLI says whether the user chose the thread count (``--threads`` or
    ``OMP_NUM_THREADS``)."""
    global _explicit
    _explicit = chosen


def chosen_by_user() -> bool:
    """Whether the user chose the thread count; from Python (no CLI), ``OMP_NUM_THREADS`` tells."""
    return _explicit if _explicit is not None else "OMP_NUM_THREADS" in os.environ


def fit_threads_to_model(model, device) -> int | None:
    """Give a small model on the CPU one thread, unless the user chose; returns the count set, if
    any."""
    import torch

    if chosen_by_user() or device.type != "cpu" or torch.get_num_threads() == 1:
        return None
    parameters = sum(p.numel() for p in model.parameters())
    if parameters >= SMALL_MODEL_PARAMETERS:
        return None
    torch.set_num_threads(1)
    log.info("torch threads: 1, since the model has %.1fM parameters, too few to gain from more "
             "(--threads N overrides)", parameters / 1e6)
    return 1


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def parallel_cells(cells: int, parameters: int | None, device_type: str, peak: int | None,
                   capacity: int | None) -> int:
    """How many cells ``--jobs`` defaults to: one per core for a model that runs on one thread
    anyway (so the count changes no score), at most as many as the memory holds (the plan's peak
    per cell), and one for anything else: a GPU, a larger model (whose threads already use the
    cores), a thread count the user chose, or a model whose size is unknown."""
    if (cells < 2 or device_type != "cpu" or chosen_by_user() or parameters is None
            or parameters >= SMALL_MODEL_PARAMETERS):
        return 1
    jobs = min(cells, usable_cores())
    if peak and capacity:
        jobs = min(jobs, max(1, capacity // peak))
    return max(1, jobs)
