"""Where the cells of a sweep run: here, one after another, or as Ray tasks on a cluster.

A sweep is every (method, seed) cell of one task; each cell is a run of one method under one seed.
The local executor runs the cells in this process. The Ray executor makes each cell one Ray task
with its own GPU request; a worker writes its own store (``OUT/workers/<run>-<method>/``) and
records its process id there, the driver merges the worker stores into ``OUT/results.sqlite``.
Ray retries a task whose worker dies, and the retried task resumes from its own store, so a
killed worker costs only the work since its last checkpoint. A cell already complete in the main
store is not submitted again.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import replace
from pathlib import Path

from ..core.method import MethodRef
from ..core.store import ResultsStore, hold_store
from .runner import Runner, RunOutcome, RunSpec, restarts

log = logging.getLogger(__name__)

FINISHED = ("done", "diverged")


def run_local(spec: RunSpec, seeds: tuple[int, ...]) -> list[tuple[Runner, RunOutcome]]:
    """Every seed's run here, one after another. The results folder is locked first, so a second
    process aimed at it stops at once with a message instead of after loading models."""
    results = []
    with hold_store(spec.out):
        for seed in seeds:
            runner = Runner(replace(spec, seed=seed))
            results.append((runner, runner.run()))
    return results


def _worker_dir(out: Path, run_id: str, label: str) -> Path:
    return out / "workers" / f"{run_id}-{label.replace('/', '_')}"


def cell_spec(runner: Runner, label: str, worker: Path) -> RunSpec:
    """One method of one seed's run as a sweep cell: its store in its own ``worker`` folder (the driver
    merges it), its saved models (``--save-model``) in the sweep's folder, only its own settings."""
    spec = runner.spec
    owners = (runner.task.name, label, MethodRef.parse(label).name)  # the other methods' --params are not its
    return replace(spec, methods=(label,), out=worker, models_out=spec.models_folder, restart=(),
                   params={k: v for k, v in spec.params.items() if k in owners})


def run_cell(spec: RunSpec) -> dict[str, str]:
    """One sweep cell, in whatever process runs it (a Ray worker)."""
    spec.out.mkdir(parents=True, exist_ok=True)
    (spec.out / "worker.pid").write_text(str(os.getpid()))
    outcome = Runner(spec).run()
    return outcome.statuses


def gpus_for_cell(runner: Runner, label: str, default: float) -> float:
    """A sharded model's cell (``--device-map auto``) asks Ray for as many GPUs as its planned peak
    needs (``harness/preflight.py``); any other cell for ``default``."""
    peak = getattr(runner, "planned_peaks", {}).get(label)
    if not runner.spec.device_map or runner.device.type != "cuda" or not peak:
        return default
    import torch

    per_gpu = torch.cuda.get_device_properties(runner.device).total_memory
    return float(max(1, math.ceil(peak / per_gpu)))


def run_ray(spec: RunSpec, seeds: tuple[int, ...], address: str | None = None,
            gpus_per_cell: float | None = None, max_retries: int = 3) -> list[tuple[Runner, RunOutcome]]:
    try:
        import ray
    except ImportError:
        raise ValueError('--executor ray needs `pip install "editbench[ray]"`') from None
    with hold_store(spec.out):
        return _run_ray(ray, spec, seeds, address, gpus_per_cell, max_retries)


def _run_ray(ray, spec: RunSpec, seeds: tuple[int, ...], address: str | None, gpus_per_cell: float | None,
             max_retries: int) -> list[tuple[Runner, RunOutcome]]:
    runners = [Runner(replace(spec, seed=seed)) for seed in seeds]  # builds models and data once, here
    if gpus_per_cell is None:
        gpus_per_cell = 1.0 if runners[0].device.type == "cuda" else 0.0
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"EDITBENCH_NO_PROGRESS": "1"}})
    remote_cell = ray.remote(run_cell).options(num_cpus=1, num_gpus=gpus_per_cell, max_retries=max_retries)
    pending = {}
    with ResultsStore(spec.out) as main:
        for runner in runners:
            for plan in runner.methods:
                worker = _worker_dir(spec.out, runner.run_id, plan.label)
                if restarts(spec, plan):  # the cell's results, here and in its worker's store
                    main.drop_cell(runner.run_id, plan.label)
                    shutil.rmtree(worker, ignore_errors=True)
                state = main.cell(runner.run_id, plan.label)
                if state is not None and state.status in FINISHED:
                    log.info("%s seed %d: already %s, not submitted", plan.label, runner.spec.seed, state.status)
                    continue
                cell = cell_spec(runner, plan.label, worker)
                gpus = gpus_for_cell(runner, plan.label, gpus_per_cell)
                submit = remote_cell if gpus == gpus_per_cell else remote_cell.options(num_gpus=gpus)
                pending[submit.remote(cell)] = cell
        for ref in pending:  # wait for all, then merge: a failed cell must not hide the others
            try:
                ray.get(ref)
            except ray.exceptions.RayError as exc:
                log.error("cell %s seed %d failed after retries: %s", pending[ref].methods[0], pending[ref].seed, exc)
        for cell in pending.values():
            worker_db = cell.out / "results.sqlite"
            if worker_db.exists():
                main.merge_from(worker_db)
        outcomes = []
        for runner in runners:
            statuses = {}
            for plan in runner.methods:
                state = main.cell(runner.run_id, plan.label)
                statuses[plan.label] = state.status if state is not None else "failed"
            outcomes.append((runner, RunOutcome(runner.run_id, main.path, statuses)))
    return outcomes
