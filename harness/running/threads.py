"""One CPU thread for a model too small to gain from more.

torch runs every operation on one thread per core by default. A small model's matrices are too
small to split well: the threads wait on each other more than they compute. So once a run's model
is loaded on the CPU, a model under :data:`SMALL_MODEL_PARAMETERS` gets one thread, which is
logged. ``--threads N`` or ``OMP_NUM_THREADS`` set by the user override it.

The count depends only on the model and the user's choice, never on what else runs: scores move
slightly with it (summation order), so a number must not depend on the machine's load. Each run
stores the count it used (``core/numerics.py``). Several processes on one machine are the user's
to share out with ``--threads`` (torch's default then oversubscribes the cores: slower, same
scores).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

#: below this many parameters a model runs on one CPU thread. Measured on the 2-core machines
#: (2026-11-26, the warm default run, alone on the machine): the 1.0M-parameter pocket model took
#: 129 and 140 s with 2 threads against 184, 226, 181 and 196 s with one (scoring in batches of
#: thousands of tokens gains most), so the threshold (20M before, a judgment) now lies below it; the
#: micro models of the tests and benches are smaller still.
SMALL_MODEL_PARAMETERS = 500_000

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
