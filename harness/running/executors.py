"""Where the cells of a sweep run: here, one after another or side by side, or as Ray tasks.

A sweep is every (method, seed) cell of one task; each cell is a run of one method under one seed.
The local executor runs the cells in this process, or, with ``--jobs N`` (by default one per core
for a model small enough for one thread: ``threads.parallel_cells``), in ``N`` worker processes
at once. The Ray executor makes each cell one Ray task with its own GPU request. A cell run
outside this process writes its own store (``OUT/workers/<run>-<method>/``) and records its
process id there; this process merges the worker stores into ``OUT/results.sqlite`` as cells
finish. A worker killed mid-cell costs only the work since its last checkpoint: the cell resumes
from its own store, retried by Ray or by the next run. A cell already complete in the main store is
not run again.
"""
from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from ...core.cache import atomic_write_bytes
from ...core.store import ResultsStore, hold_store
from ..plan.preflight import refuse
from ..plan.resolve import RunPlan, for_cell
from . import logs, threads
from .runner import Runner, RunOutcome

log = logging.getLogger(__name__)

FINISHED = ("done", "diverged")


def run_local(plans: Sequence[RunPlan]) -> list[tuple[Runner, RunOutcome]]:
    """Every seed's run here, one after another. The results folder is locked first, so a second
    process aimed at it stops at once with a message instead of after loading models."""
    results = []
    with hold_store(plans[0].spec.out):
        for plan in plans:
            runner = Runner(plan)
            results.append((runner, runner.run()))
    return results


def default_jobs(plans: Sequence[RunPlan]) -> int:
    """``--jobs`` when the user gave none (``threads.parallel_cells``)."""
    plan = plans[0]
    peaks = [plan.planned_peak(setup.label) for setup in plan.methods]
    return threads.parallel_cells(
        cells=sum(len(p.methods) for p in plans),
        parameters=plan.model_shape.n_params if plan.model_shape is not None else None,
        device_type=plan.device.type, peak=max((p for p in peaks if p), default=None),
        capacity=plan.capacity)


def _cells_left(main: ResultsStore, plans: Sequence[RunPlan]) -> Iterator[RunPlan]:
    """Each (method, seed) cell not yet finished in the main store, as a plan of its own whose
    store is its worker folder; ``--restart`` drops a cell's results here and in that folder."""
    out = plans[0].spec.out
    for plan in plans:
        Runner(plan).check_code(main)  # the run in the main store, made by other code?
        for setup in plan.methods:
            worker = _worker_dir(out, plan.run_id, setup.label)
            if plan.restarts(setup):  # the cell's results, here and in its worker's store
                main.drop_cell(plan.run_id, setup.label)
                shutil.rmtree(worker, ignore_errors=True)
            state = main.cell(plan.run_id, setup.label)
            if state is not None and state.status in FINISHED:
                log.info("%s seed %d: already %s, not submitted", setup.label, plan.seed,
                         state.status)
                continue
            yield for_cell(plan, setup, worker)


def _outcomes(main: ResultsStore, plans: Sequence[RunPlan]) -> list[tuple[Runner, RunOutcome]]:
    outcomes = []
    for plan in plans:
        statuses = {}
        for setup in plan.methods:
            state = main.cell(plan.run_id, setup.label)
            statuses[setup.label] = state.status if state is not None else "failed"
        outcomes.append((Runner(plan), RunOutcome(plan.run_id, main.path, statuses)))
    return outcomes


def run_parallel(plans: Sequence[RunPlan], jobs: int) -> list[tuple[Runner, RunOutcome]]:
    """Every cell in up to ``jobs`` worker processes at once, each cell's store merged into the
    main one as it finishes. A failed cell is logged and the others go on, as under Ray; its
    worker folder keeps what it stored, so the next run resumes it."""
    out = plans[0].spec.out
    with hold_store(out):
        for plan in plans:  # refused here, before any worker starts
            refuse(plan)
        with ResultsStore(out) as main:
            for plan in plans:  # each run's record and unedited baseline, once, here
                runner = Runner(plan)
                runner.prepare()
                runner.begin(main)
            cells = list(_cells_left(main, plans))
            for cell in cells:  # a new cell's store starts with them (a started one has them)
                if not (cell.spec.out / "results.sqlite").exists():
                    with ResultsStore(cell.spec.out) as worker:
                        worker.seed_from(main.path, cell.run_id)
            if cells:
                _run_cells(main, cells, min(jobs, len(cells)))
            return _outcomes(main, plans)


def _run_cells(main: ResultsStore, cells: list[RunPlan], jobs: int) -> None:
    log.info("running %d cells, %d at a time, each in its own process (--jobs)", len(cells), jobs)
    cache = cells[0].cache_dir
    cells = longest_first(cells, _cell_seconds(cache))
    measured: dict[str, float] = {}
    # a fresh interpreter per worker: a forked one would inherit torch's thread pools
    context = multiprocessing.get_context("spawn")
    settings = (logging.getLogger().getEffectiveLevel(), threads.chosen_by_user(),
                max(1, threads.usable_cores() // jobs), os.getpid())
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
                    measured[_cell_key(cell)] = future.result()
                except Exception as exc:  # a cell's failure must not end the others
                    log.error("cell %s seed %d failed: %s", label, cell.seed, exc)
                worker_db = cell.spec.out / "results.sqlite"
                if worker_db.exists():
                    main.merge_from(worker_db)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _record_cell_seconds(cache, measured)


def _start_worker(level: int, threads_chosen: bool, share: int, parent: int) -> None:
    """A worker process's set-up: the command's logging; torch threads as the parent would choose
    them (the user's count, else one for a small model once loaded, else the worker's share of
    the cores); and an end of its own if the parent dies (a killed run must leave no process
    holding a worker folder)."""
    logs.configure(level)
    os.environ.setdefault("EDITBENCH_PROGRESS", "log")  # one terminal, several cells: no bars
    threads.mark_explicit(threads_chosen)
    if not threads_chosen:
        import torch

        torch.set_num_threads(share)
    if not _killed_with_parent():
        watcher = threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True)
        watcher.start()


def _killed_with_parent() -> bool:
    """On Linux, ask the kernel to kill this process the moment its parent dies (a killed run's
    workers must not write on for another checkpoint); False where that cannot be asked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.1)
    os._exit(1)


def _worker_dir(out: Path, run_id: str, label: str) -> Path:
    return out / "workers" / f"{run_id}-{label.replace('/', '_')}"


def run_cell(plan: RunPlan, models_folder: Path) -> dict[str, str]:
    """One sweep cell, in whatever process runs it (a Ray worker)."""
    out = plan.spec.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "worker.pid").write_text(str(os.getpid()))
    return Runner(plan, models_folder=models_folder).run().statuses


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
    """Cells never timed first (in the plan's order), then the rest by their last time, longest
    first: the schedule that leaves the least time with one worker busy and the others idle."""
    return sorted(cells, key=lambda cell: -seconds.get(_cell_key(cell), math.inf))


def gpus_for_cell(plan: RunPlan, label: str, default: float) -> float:
    """A sharded model's cell (``--device-map auto``) asks Ray for as many GPUs as its planned
    peak needs (the plan's estimates); any other cell for ``default``."""
    peak = plan.planned_peak(label)
    if not plan.spec.device_map or plan.device.type != "cuda" or not peak:
        return default
    import torch

    per_gpu = torch.cuda.get_device_properties(plan.device).total_memory
    return float(max(1, math.ceil(peak / per_gpu)))


def _remote_cell(ray, address: str | None, gpus_per_cell: float, max_retries: int):
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"EDITBENCH_NO_PROGRESS": "1"}})
    return ray.remote(run_cell).options(num_cpus=1, num_gpus=gpus_per_cell,
                                        max_retries=max_retries)


def run_ray(plans: Sequence[RunPlan], address: str | None = None,
            gpus_per_cell: float | None = None, max_retries: int = 3,
            ) -> list[tuple[Runner, RunOutcome]]:
    try:
        import ray
    except ImportError:
        raise ValueError('--executor ray needs `pip install "editbench[ray]"`') from None
    with hold_store(plans[0].spec.out):
        return _run_ray(ray, plans, address, gpus_per_cell, max_retries)


def _run_ray(ray, plans: Sequence[RunPlan], address: str | None, gpus_per_cell: float | None,
             max_retries: int) -> list[tuple[Runner, RunOutcome]]:
    out = plans[0].spec.out
    for plan in plans:  # refused here, before any cell is submitted
        refuse(plan)
    if gpus_per_cell is None:
        gpus_per_cell = 1.0 if plans[0].device.type == "cuda" else 0.0
    remote_cell = None  # Ray starts with the first cell left to run: a finished sweep needs none
    pending = {}
    with ResultsStore(out) as main:
        for cell in _cells_left(main, plans):
            if remote_cell is None:
                remote_cell = _remote_cell(ray, address, gpus_per_cell, max_retries)
            gpus = gpus_for_cell(cell, cell.methods[0].label, gpus_per_cell)
            submit = (remote_cell if gpus == gpus_per_cell
                      else remote_cell.options(num_gpus=gpus))
            pending[submit.remote(cell, out)] = cell
        for ref in pending:  # wait for all, then merge: a failed cell must not hide the others
            try:
                ray.get(ref)
            except ray.exceptions.RayError as exc:
                log.error("cell %s seed %d failed after retries: %s", pending[ref].methods[0].label,
                          pending[ref].seed, exc)
        for cell in pending.values():
            worker_db = cell.spec.out / "results.sqlite"
            if worker_db.exists():
                main.merge_from(worker_db)
        return _outcomes(main, plans)
