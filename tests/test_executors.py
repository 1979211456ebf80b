import os
import signal
import sqlite3
import sys
import time
from dataclasses import replace
from pathlib import Path

import forked
import pytest
from test_faults import _env

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
            "--methods", "ft-m", "--seed", "0,1", "--model", str(micro_llama),
            "--param", "pocket.n_entities=20", "--edits", "24", "--batch-size", "2",
            "--checkpoints", ",".join(str(n) for n in range(4, 25, 4)), "--device", "cpu",
            "--param", "ft-m.stop_loss=0", "--out", str(out)]
    env = {**_env(tmp_path / "cache"), "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    # the driver forked from a process that imported torch once (tests/forked.py)
    driver = forked.start(args, env, merge_stderr=True)
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
    assert len(cells) == 2 and set(cells["status"]) == {"done"}
    checkpoints = store.checkpoints()
    assert len(checkpoints) == 2 * 6  # every cell once, every checkpoint once
    assert not checkpoints.duplicated(["run_id", "method", "n_edits"]).any()
    rerun = forked.run(args, env)
    assert rerun.returncode == 0 and "not submitted" in rerun.stdout + rerun.stderr
    assert len(load_results(out).checkpoints()) == 12


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


def test_cells_side_by_side_survive_a_killed_run_and_score_as_one_after_another(
    tmp_path, micro_llama
):
    """``--jobs 2``: killed with -9 mid-sweep, its workers end too (none is left holding a worker
    folder); run again, it resumes each unfinished cell from its worker store; the scores equal a
    run of the same cells one after another in one process, value for value."""
    from test_faults import scores

    args = [sys.executable, "-m", "editbench.harness.cli.group", "run", "--task", "pocket",
            "--param", "pocket.n_entities=20", "--model", str(micro_llama),
            "--methods", "ft-m", "--seed", "0,1", "--edits", "12", "--batch-size", "2",
            "--checkpoints", ",".join(str(n) for n in range(2, 13, 2)), "--device", "cpu",
            "--gen-eval", "off", "--param", "ft-m.stop_loss=0"]
    env = _env(tmp_path / "cache")
    clean = forked.run([*args, "--jobs", "1", "--out", str(tmp_path / "clean")], env)
    assert clean.returncode == 0, clean.stderr[-3000:]
    out = tmp_path / "side-by-side"
    driver = forked.start([*args, "--jobs", "2", "--out", str(out)], env)
    workers: set[int] = set()
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:
        stored = {pid.parent: _checkpoints(pid.parent / "results.sqlite")
                  for pid in out.glob("workers/*/worker.pid")}
        if len(stored) >= 2 and min(stored.values()) >= 2 and max(stored.values()) < 6:
            workers = {int((folder / "worker.pid").read_text()) for folder in stored}
            break
        time.sleep(0.05)
    assert workers, "no two cells were caught mid-run to kill; make the run longer"
    driver.kill()
    driver.communicate(timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.2)
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "a worker outlived its run"
    resumed = forked.run([*args, "--jobs", "2", "--out", str(out)], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "2 at a time" in resumed.stderr and "resuming after" in resumed.stderr
    import pandas as pd

    pd.testing.assert_frame_equal(scores(out), scores(tmp_path / "clean"))
    again = forked.run([*args, "--jobs", "2", "--out", str(out)], env)
    assert again.returncode == 0 and again.stderr.count("not submitted") == 2, again.stderr[-3000:]


@pytest.mark.parametrize("cells, parameters, device, chosen, peak, capacity, expected", [
    (12, 1_000_000, "cpu", False, None, None, 4),  # the pocket world: one cell per core
    (3, 1_000_000, "cpu", False, None, None, 3),  # no more workers than cells
    (12, 1_000_000, "cpu", False, 3 << 30, 8 << 30, 2),  # no more than the memory holds
    (1, 1_000_000, "cpu", False, None, None, 1),
    (12, 1_000_000, "cuda", False, None, None, 1),  # a GPU: one cell at a time
    (12, 8_000_000_000, "cpu", False, None, None, 1),  # its threads already use the cores
    (12, 1_000_000, "cpu", True, None, None, 1),  # the user shares the cores out (--threads)
    (12, None, "cpu", False, None, None, 1),  # unknown size
])
def test_cells_run_side_by_side_only_for_a_one_thread_model_on_the_cpu(
    monkeypatch, cells, parameters, device, chosen, peak, capacity, expected
):
    from editbench.harness.running import threads

    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads, "_explicit", chosen)
    assert threads.parallel_cells(cells, parameters, device, peak, capacity) == expected


def test_cells_timed_before_run_longest_first_and_new_ones_before_them(tmp_path):
    """The order a side-by-side run submits its cells: never-timed cells first (they may be the
    longest), then by the seconds the cache recorded, longest first, so that the last cell to
    start is a short one."""
    from types import SimpleNamespace

    from editbench.harness.running import side_by_side as executors

    def cell(label, run_id="r", edits=100, model="m"):
        return SimpleNamespace(run_id=run_id, methods=(SimpleNamespace(label=label),),
                               task=SimpleNamespace(name="pocket"), model_source=model, edits=edits)

    cells = [cell(name) for name in ("quick", "new", "slow", "middle")]
    executors._record_cell_seconds(tmp_path, {"r/quick": 2.0, "r/slow": 19.0})
    executors._record_cell_seconds(tmp_path, {"r/middle": 8.0, "r/quick": 3.0})
    seconds = executors._cell_seconds(tmp_path)
    assert seconds == {"r/slow": 19.0, "r/middle": 8.0, "r/quick": 3.0}
    assert [c.methods[0].label for c in executors.longest_first(cells, seconds)] == \
        ["new", "slow", "middle", "quick"]
    # another seed (another run id) of a timed kind is ordered by the kind's time; its own time,
    # once known, comes first; another edit count is another kind
    timed = {"r/slow": 19.0, "kind:pocket/m/100/slow": 19.0, "kind:pocket/m/100/quick": 3.0,
             "s/quick": 30.0}
    others = [cell("quick", "t"), cell("slow", "s", edits=500), cell("slow", "s"),
              cell("quick", "s")]
    order = executors.longest_first(others, timed)
    assert [(c.run_id, c.methods[0].label, c.edits) for c in order] == [
        ("s", "slow", 500), ("s", "quick", 100), ("s", "slow", 100), ("t", "quick", 100)]
    assert executors._cell_kind(cell("slow")) == "kind:pocket/m/100/slow"
    # a model is its folder's name: the same shipped model in another clone is the same kind
    moved = [cell("slow", model=f"/{root}/artifacts/models/pocket-1")
             for root in ("work/main", "tmp/clone")]
    assert executors._cell_kind(moved[0]) == executors._cell_kind(moved[1]) == \
        "kind:pocket/pocket-1/100/slow"
    (tmp_path / executors.CELL_SECONDS).write_text("not json")
    assert executors._cell_seconds(tmp_path) == {}  # a damaged record costs only the order


def test_the_python_api_runs_cells_one_after_another_unless_given_jobs(
    tmp_path, micro_llama, monkeypatch
):
    """The command line's default of one cell per core is not the API's: a script that calls
    editbench.run without a __main__ guard would be imported again by every worker."""
    from editbench.harness import api
    from editbench.harness.running import side_by_side as executors
    from editbench.harness.running import threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_explicit", None)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    spec = RunSpec(methods=("ft-m", "ft-l"), model=str(micro_llama), edits=2, batch_size=2,
                   out=tmp_path / "api", device="cpu", cache_dir=tmp_path, params=POCKET,
                   gen_eval=False)
    assert executors.default_jobs(resolve_sweep(spec)) == 2  # what the command line would take
    results = api.execute(spec)
    assert all(outcome.ok for _, outcome in results)
    assert not (spec.out / "workers").exists()
