"""Where the cells of a sweep run: here, one after another or side by side, or as Ray tasks.

A sweep is every (method, seed) cell of one task; each cell is a run of one method under one seed.
The local executor runs the cells in this process, or, with ``--jobs N``, in ``N`` worker
processes at once (``side_by_side.py``). The Ray executor makes each cell one Ray task with its
own GPU request. A cell run outside this process writes its own store
(``OUT/workers/<run>-<method>/``) and records its process id there; this process merges the
worker stores into ``OUT/results.sqlite`` as cells finish. A worker killed mid-cell costs only the
work since its last checkpoint: the cell resumes from its own store, retried by Ray or by the next
run. A cell already complete in the main store is not run again.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from ...core.store import ResultsStore, hold_store
from ..plan.preflight import refuse
from ..plan.resolve import RunPlan, for_cell
from .allocator import tune_allocator
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


def cells_left(main: ResultsStore, plans: Sequence[RunPlan]) -> Iterator[RunPlan]:
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


def outcomes(main: ResultsStore, plans: Sequence[RunPlan]) -> list[tuple[Runner, RunOutcome]]:
    """Each plan's cells as the main store holds them after the workers' stores are merged."""
    found = []
    for plan in plans:
        statuses = {}
        for setup in plan.methods:
            state = main.cell(plan.run_id, setup.label)
            statuses[setup.label] = state.status if state is not None else "failed"
        found.append((Runner(plan), RunOutcome(plan.run_id, main.path, statuses)))
    return found


def merge_worker(main: ResultsStore, cell: RunPlan) -> None:
    """Fold a cell's worker store into the main one, if the worker wrote one."""
    worker_db = cell.spec.out / "results.sqlite"
    if worker_db.exists():
        main.merge_from(worker_db)


def _worker_dir(out: Path, run_id: str, label: str) -> Path:
    return out / "workers" / f"{run_id}-{label.replace('/', '_')}"


def run_cell(plan: RunPlan, models_folder: Path) -> dict[str, str]:
    """One sweep cell, in whatever process runs it (a Ray worker, a ``--jobs`` worker)."""
    tune_allocator()
    out = plan.spec.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "worker.pid").write_text(str(os.getpid()))
    return Runner(plan, models_folder=models_folder).run().statuses


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
        for cell in cells_left(main, plans):
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
            merge_worker(main, cell)
        return outcomes(main, plans)
