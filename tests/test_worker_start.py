"""``--jobs`` workers forked from a server that imported torch and editbench (worker_start.py)."""

import os
import sys
import time
from dataclasses import replace

import forked
import pytest
from test_faults import _env

from editbench.harness.api import _may_run_side_by_side
from editbench.harness.plan.settings import RunSpec
from editbench.harness.running import threads

#: run in a process of its own (the test process may hold the suite's own forkserver): a pool
#: forked from the server started early, whose workers take the main process's EDITBENCH_* values
#: and are not the main process's children, and a pool that spawns once the environment changed
SCRIPT = """
import gc, os, sys
from concurrent.futures import ProcessPoolExecutor
from editbench.harness.running import side_by_side, worker_start

if __name__ == "__main__":
    assert worker_start.start_early()
    os.environ["EDITBENCH_SET_LATER"] = "seen"
    context = worker_start.pool_context()
    settings = (20, False, 1, os.getpid(), dict(os.environ))
    with ProcessPoolExecutor(1, mp_context=context, initializer=side_by_side._start_worker,
                             initargs=settings) as pool:
        print(context.get_start_method(), pool.submit(os.getenv, "EDITBENCH_SET_LATER").result(),
              pool.submit(os.getppid).result() != os.getpid(),
              pool.submit(gc.get_freeze_count).result() > 10000)  # heap.py: imports frozen
    os.environ["SOME_LIBRARY_SETTING"] = "1"  # torch in the server may have read it at import
    print(worker_start.pool_context().get_start_method())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the forkserver on Linux")
def test_workers_fork_from_the_early_server_while_the_environment_is_the_same(tmp_path):
    result = forked.run([sys.executable, "-c", SCRIPT], _env(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["forkserver", "seen", "True", "True", "spawn"]


def test_a_second_server_is_not_started_where_the_process_has_one(monkeypatch):
    """The test harness's own server was started with its own imports and environment."""
    from multiprocessing import forkserver

    from editbench.harness.running import worker_start

    monkeypatch.setattr(worker_start, "_server_environment", None)
    monkeypatch.setattr(forkserver._forkserver, "_forkserver_pid", 12345)
    assert not worker_start.start_early()
    assert worker_start.pool_context().get_start_method() == "spawn"


@pytest.mark.parametrize("changes, side_by_side, expected", [
    ({}, True, True),  # the command line's default run: several methods, jobs left to choose
    ({}, False, False),  # the Python API: one at a time unless jobs are given
    ({"jobs": 1}, True, False),
    ({"jobs": 2}, False, True),
    ({"executor": "ray"}, True, False),
    ({"methods": ("ft-m",)}, True, False),  # one cell
    ({"methods": ("ft-m",), "seed": (0, 1)}, True, True),
    ({"device": "cuda"}, True, False),
])
def test_the_server_starts_early_only_for_a_run_that_may_run_cells_side_by_side(
    monkeypatch, changes, side_by_side, expected
):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "_explicit", False)
    spec = replace(RunSpec(), **changes)
    assert _may_run_side_by_side(spec, side_by_side) is expected


def test_a_worker_ends_when_the_main_process_does(tmp_path):
    """The watcher of a forked worker, whose parent is the server: it ends the moment the process
    it watches ends, whatever its parent."""
    script = ("import os, sys, time\n"
              "from editbench.harness.running import worker_start\n"
              "worker_start.watch_main(int(sys.argv[1]))\n"
              "print('watching', file=sys.stderr, flush=True)\n"
              "time.sleep(60)\n")
    watched = forked.start([sys.executable, "-c", "import time; time.sleep(60)"],
                           _env(tmp_path / "a"))
    watcher = forked.start([sys.executable, "-c", script, str(watched.pid)], _env(tmp_path / "b"))
    try:
        deadline = time.time() + 60
        while "watching" not in watcher.stderr_so_far() and time.time() < deadline:
            time.sleep(0.05)
        assert watcher.poll() is None, watcher.stderr_so_far()
        os.kill(watched.pid, 9)
        watched.communicate(timeout=30)
        watcher.communicate(timeout=30)
        assert watcher.returncode == 1
    finally:
        for process in (watched, watcher):
            if process.poll() is None:
                process.kill()
