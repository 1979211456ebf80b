import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from editbench.core.store import ResultsStore, load_results
from editbench.harness.plan.resolve import resolve_sweep
from editbench.harness.plan.settings import RunSpec
from editbench.harness.running.executors import run_local

POCKET = {"pocket": {"n_entities": "20"}}


def test_a_local_sweep_runs_every_method_and_seed(tmp_path, micro_llama):
    spec = RunSpec(
        methods=("ft-m", "ft-l"), model=str(micro_llama), edits=6, batch_size=3, out=tmp_path / "o",
        device="cpu", cache_dir=tmp_path, params=POCKET
    )
    results = run_local(resolve_sweep(replace(spec, seed=(0, 1))))
    assert all(outcome.ok for _, outcome in results)
    cells = load_results(spec.out).cells()
    assert len(cells) == 4 and cells["run_id"].nunique() == 2


def test_merging_a_worker_store_is_idempotent(tmp_path, micro_llama):
    spec = RunSpec(
        methods=("ft-m",), model=str(micro_llama), edits=4, batch_size=2, out=tmp_path / "w",
        device="cpu", cache_dir=tmp_path, params=POCKET
    )
    run_local(resolve_sweep(spec))
    with ResultsStore(tmp_path / "main") as main:
        main.merge_from(spec.out / "results.sqlite")
        main.merge_from(spec.out / "results.sqlite")
        assert len(main.scores()) == len(load_results(spec.out).scores())
        assert len(main.cells()) == 1


def _checkpoints(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
    except sqlite3.DatabaseError:
        return 0


def test_a_ray_sweep_survives_a_killed_worker(tmp_path, micro_llama):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'editbench[ray]'")
    out = tmp_path / "sweep"
    args = [sys.executable, "-m", "editbench.harness.cli.group", "run", "--executor", "ray",
            "--methods", "ft-m,ft-l", "--seed", "0,1", "--model", str(micro_llama),
            "--param", "pocket.n_entities=20", "--edits", "24", "--batch-size", "2",
            "--checkpoints", ",".join(str(n) for n in range(4, 25, 4)), "--device", "cpu",
            "--param", "ft-m.stop_loss=0", "--param", "ft-l.stop_loss=0", "--out", str(out)]
    env = {**os.environ, "EDITBENCH_NO_PROGRESS": "1", "EDITBENCH_CACHE": str(tmp_path / "cache"),
           "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    driver = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    killed = None
    deadline = time.time() + 300
    while killed is None and time.time() < deadline and driver.poll() is None:
        for pid_file in out.glob("workers/*/worker.pid"):
            stored = _checkpoints(pid_file.parent / "results.sqlite")
            if 2 <= stored < 6:
                killed = int(pid_file.read_text())
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.05)
    output, _ = driver.communicate(timeout=600)
    assert killed is not None, f"no worker was caught mid-task to kill:\n{output[-3000:]}"
    assert driver.returncode == 0, output[-3000:]
    store = load_results(out)
    cells = store.cells()
    assert len(cells) == 4 and set(cells["status"]) == {"done"}
    checkpoints = store.checkpoints()
    assert len(checkpoints) == 4 * 6  # every cell once, every checkpoint once
    assert not checkpoints.duplicated(["run_id", "method", "n_edits"]).any()
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0 and "not submitted" in rerun.stdout + rerun.stderr
    assert len(load_results(out).checkpoints()) == 24


def test_a_sweep_cell_saves_its_model_in_the_sweeps_folder_not_its_workers(tmp_path, micro_llama):
    """A Ray cell runs with its worker folder as its store; ``--save-model`` must still write where
    the user looks, ``OUT/models/<run>/<method>/edits-N``. Checked on the cell spec and run_cell a
    worker runs."""
    from editbench.harness.plan.resolve import for_cell, resolve
    from editbench.harness.running.executors import _worker_dir, run_cell

    out = tmp_path / "sweep"
    spec = RunSpec(
        methods=("ft-m", "ft-l"), model=str(micro_llama), edits=4, batch_size=2, checkpoints="2,4",
        out=out, device="cpu", cache_dir=tmp_path, save_model=2, gen_eval=False,
        params={**POCKET, "ft-l": {"stop_loss": "0"}}
    )
    plan = resolve(spec)
    worker = _worker_dir(out, plan.run_id, "ft-m")
    cell = for_cell(plan, plan.methods[0], worker)
    assert [m.label for m in cell.methods] == ["ft-m"] and cell.spec.out == worker
    assert "ft-l" not in cell.spec.params and cell.run_id == plan.run_id
    assert run_cell(cell, out) == {"ft-m": "done"}
    saved = out / "models" / plan.run_id / "ft-m" / "edits-2"
    assert (saved / "config.json").is_file() and (saved / "model.safetensors").is_file()
    assert not (worker / "models").exists()
