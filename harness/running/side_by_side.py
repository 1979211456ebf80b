"""Cells side by side: a sweep's (method, seed) cells in ``--jobs`` worker processes on this
machine at once, each with its own store under ``OUT/workers/`` (as Ray's workers have), merged
into the main store as each finishes.

By default (on the command line) one per core, for a model small enough to run on one thread
anyway, so the count changes no score (``threads.parallel_cells``). The main process records each
run and scores its unedited model once, then seeds each new cell's store with it. Cells start
longest first, by the wall time the cache recorded for them last time. Workers are forked from a
server that imported torch and editbench before the plan was resolved (``worker_start.py``), or
fresh interpreters where it cannot serve; never forked from the main process, which would hand
them torch's thread pools. They log their progress as lines and end with their run: a killed run
leaves no worker writing on, and the next run resumes each unfinished cell from its worker
store.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path, PurePath

from ...core.cache import atomic_write_bytes
from ...core.store import ResultsStore, hold_store
from ..plan.resolve import RunPlan
from . import heap, logs, threads, worker_start
from .executors import cells_left, merge_worker, outcomes, run_cell
from .runner import Runner, RunOutcome

log = logging.getLogger(__name__)


def default_jobs(plans: Sequence[RunPlan]) -> int:
    """``--jobs`` when the user gave none (``threads.parallel_cells``)."""
    plan = plans[0]
    peaks = [plan.planned_peak(setup.label) for setup in plan.methods]
    return threads.parallel_cells(
        cells=sum(len(p.methods) for p in plans),
        parameters=plan.model_shape.n_params if plan.model_shape is not None else None,
        device_type=plan.device.type, peak=max((p for p in peaks if p), default=None),
        capacity=plan.capacity)


def run_parallel(plans: Sequence[RunPlan], jobs: int) -> list[tuple[Runner, RunOutcome]]:
    """Every cell in up to ``jobs`` worker processes at once, each cell's store merged into the
    main one as it finishes. A failed cell is logged and the others go on, as under Ray; its
    worker folder keeps what it stored, so the next run resumes it."""
    out = plans[0].spec.out
    with hold_store(out):
        runners = [Runner(plan) for plan in plans]
        for runner in runners:  # checked (and refused) before anything is written
            runner.prepare()
        with ResultsStore(out) as main:
            for runner in runners:  # each run's record and unedited baseline, once, here
                runner.begin(main)
            cells = list(cells_left(main, plans))
            for cell in cells:  # a new cell's store starts with them (a started one has them)
                if not (cell.spec.out / "results.sqlite").exists():
                    with ResultsStore(cell.spec.out) as worker:
                        worker.seed_from(main.path, cell.run_id)
            if cells:
                _run_cells(main, cells, min(jobs, len(cells)))
            return outcomes(main, plans)


def _run_cells(main: ResultsStore, cells: list[RunPlan], jobs: int) -> None:
    log.info("running %d cells, %d at a time, each in its own process (--jobs)", len(cells), jobs)
    cache = cells[0].cache_dir
    cells = longest_first(cells, _cell_seconds(cache))
    measured: dict[str, float] = {}
    settings = (logging.getLogger().getEffectiveLevel(), threads.chosen_by_user(),
                max(1, threads.usable_cores() // jobs), os.getpid(), dict(os.environ))
    context = worker_start.pool_context()
    pool = ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                               initargs=settings)
    try:
        pending = {pool.submit(_timed_cell, cell, main.folder): cell for cell in cells}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                cell = pending.pop(future)
                label = cell.methods[0].label
                try:
                    seconds = future.result()
                    measured[_cell_key(cell)] = measured[_cell_kind(cell)] = seconds
                except Exception as exc:  # a cell's failure must not end the others
                    log.error("cell %s seed %d failed: %s", label, cell.seed, exc)
                merge_worker(main, cell)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _record_cell_seconds(cache, measured)


def _start_worker(level: int, threads_chosen: bool, share: int, main: int,
                  environ: dict[str, str]) -> None:
    """A worker process's set-up: the main process's environment; the command's logging; torch
    threads as the parent would choose them (the user's count, else one for a small model once
    loaded, else the worker's share of the cores); and an end of its own when the main process
    ends (a killed run must leave no process holding a worker folder). What the worker inherited
    or imported is exempt from its collections (``heap.py``)."""
    heap.freeze_what_exists()
    worker_start.worker_environment(environ)
    logs.configure(level)
    os.environ.setdefault("EDITBENCH_PROGRESS", "log")  # one terminal, several cells: no bars
    threads.mark_explicit(threads_chosen)
    if not threads_chosen:
        import torch

        torch.set_num_threads(share)
    _killed_with_parent()
    worker_start.watch_main(main)  # a forked worker's parent is the server, not the main process


def _killed_with_parent() -> bool:
    """On Linux, ask the kernel to kill this process the moment its parent dies (a spawned
    worker's parent is the main process); False where that cannot be asked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def _timed_cell(plan: RunPlan, models_folder: Path) -> float:
    """:func:`run_cell` in a side-by-side worker; returns its wall seconds (the next run's
    order)."""
    start = time.perf_counter()
    run_cell(plan, models_folder)
    return time.perf_counter() - start


#: wall seconds of recent side-by-side cells, by run and method, in the cache: a later run of the
#: same cells starts the longest first, so that no long cell runs alone at the end
CELL_SECONDS = "cell-seconds.json"
_KEEP_CELL_SECONDS = 2000


def _cell_key(cell: RunPlan) -> str:
    return f"{cell.run_id}/{cell.methods[0].label}"


def _cell_kind(cell: RunPlan) -> str:
    """The same method on the same task, model and edit count, whatever else the run id holds (the
    seed, the model's folder: a fresh clone's shipped model has another path and the same name): a
    new seed, or a clone's first run on a warm cache, is ordered by its kind's last time instead of
    the plan's order (a three-seed scenario run lost about two minutes to that order)."""
    model = PurePath(cell.model_source).name or cell.model_source
    return f"kind:{cell.task.name}/{model}/{cell.edits}/{cell.methods[0].label}"


def _cell_seconds(cache: Path) -> dict[str, float]:
    try:
        found = json.loads((cache / CELL_SECONDS).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {k: float(v) for k, v in found.items() if isinstance(v, (int, float))}


def _record_cell_seconds(cache: Path, measured: dict[str, float]) -> None:
    """Add ``measured`` to the cache's record (the newest kept); a cache that cannot be written
    costs only the order."""
    if not measured:
        return
    known = {k: v for k, v in _cell_seconds(cache).items() if k not in measured}
    known.update(measured)
    kept = dict(list(known.items())[-_KEEP_CELL_SECONDS:])
    try:
        atomic_write_bytes(cache / CELL_SECONDS, json.dumps(kept, indent=0).encode())
    except OSError as exc:
        log.debug("cell times not recorded: %s", exc)


def longest_first(cells: list[RunPlan], seconds: dict[str, float]) -> list[RunPlan]:
    """Cells never timed first (in the plan's order), then the rest by their last time (their
    own, else their kind's), longest first: the schedule that leaves the least time with one
    worker busy and the others idle."""

    def last_time(cell: RunPlan) -> float:
        return seconds.get(_cell_key(cell), seconds.get(_cell_kind(cell), math.inf))

    return sorted(cells, key=lambda cell: -last_time(cell))
