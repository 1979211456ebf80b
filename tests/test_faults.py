"""Fault injection, process level: kills at chosen points (``EDITBENCH_FAULT``, see core/faults.py),
two runs on one store, two builders of one cache entry, a full disk (RLIMIT_FSIZE), a read-only
and a damaged store. Every case ends in a correct result or a one-line error naming the culprit.

The runs are real ``editbench`` processes on a micro model: os._exit at a fault point is a kill
(no cleanup runs), so the store and the snapshots are left exactly as a crash would leave them.
Most are forked from a process that imported torch once (tests/forked.py); those that must drop
root's capabilities before they start are fresh interpreters (the drop takes effect at exec).
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import forked
import pandas as pd
import pytest

from editbench.core.faults import FAULT_EXIT
from editbench.core.store import load_results

CHECKPOINTS = (2, 4, 6, 8, 10, 12)


def _args(model: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "editbench.harness.cli.group", "run", "--task", "pocket",
            "--param", "pocket.n_entities=20",
            "--model", str(model), "--methods", "ft-m", "--edits", "12", "--batch-size", "2",
            "--checkpoints", ",".join(map(str, CHECKPOINTS)), "--device", "cpu",
            "--param", "ft-m.stop_loss=0",
            "--out", str(out), *extra]


def _env(cache: Path, fault: str | None = None) -> dict[str, str]:
    env = {**os.environ, "EDITBENCH_NO_PROGRESS": "1", "EDITBENCH_CACHE": str(cache),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("EDITBENCH_FAULT", None)
    if fault:
        env["EDITBENCH_FAULT"] = fault
    return env


def _run(
    model: Path, out: Path, cache: Path, fault: str | None = None, preexec=None, extra=()
) -> subprocess.CompletedProcess:
    # forked from a process that imported torch once (tests/forked.py)
    return forked.run(_args(model, out, *extra), _env(cache, fault), timeout=300, preexec=preexec)


def scores(folder: Path) -> pd.DataFrame:
    store = load_results(folder)
    try:
        return store.scores().drop(columns="run_id").sort_values(
            ["method", "n_edits", "position", "metric"]).reset_index(drop=True)
    finally:
        store.close()


def checkpoints(folder: Path) -> list[int]:
    store = load_results(folder)
    try:
        return sorted(store.checkpoints()["n_edits"])
    finally:
        store.close()


def snapshot_entries(out: Path) -> list[str]:
    """Everything under the snapshot folders: published snapshots and staging leftovers."""
    return sorted(p.name for p in out.glob("snapshots/*/*/*"))


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The command's error: exactly one line starting with 'Error:' and no traceback."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, micro_llama) -> Path:
    """The results folder of an uninterrupted run."""
    folder = tmp_path_factory.mktemp("clean")
    result = _run(micro_llama, folder / "out", folder / "cache")
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "out"


@pytest.fixture(scope="module")
def clean(clean_run) -> pd.DataFrame:
    """The scores of an uninterrupted run, the reference every interrupted run must equal."""
    frame = scores(clean_run)
    # the pocket world's teacher-forced, locality, portability and generated
    per_edit = frame["metric"].nunique()
    assert per_edit >= 9 and len(frame) == per_edit * sum(CHECKPOINTS)
    return frame


def test_kills_at_every_point_of_a_checkpoint_then_resume_equals_an_uninterrupted_run(
    tmp_path, micro_llama, clean
):
    out, cache = tmp_path / "out", tmp_path / "cache"
    # killed while the second snapshot is being written: its staging folder is left behind
    assert _run(micro_llama, out, cache, "snapshot-staged:2").returncode == FAULT_EXIT
    assert checkpoints(out) == [2]
    assert any(name.startswith(".edits-") for name in snapshot_entries(out))
    # killed with the snapshot of 4 in place but its checkpoint not committed
    assert _run(micro_llama, out, cache, "after-snapshot:1").returncode == FAULT_EXIT
    assert checkpoints(out) == [2]
    # the resume removed it
    assert not any(name.startswith(".edits-") for name in snapshot_entries(out))
    # killed inside the checkpoint's transaction: nothing of it is stored
    assert _run(micro_llama, out, cache, "in-checkpoint:1").returncode == FAULT_EXIT
    assert checkpoints(out) == [2]
    # killed after committing 6, before the older snapshots were removed
    assert _run(micro_llama, out, cache, "after-checkpoint:2").returncode == FAULT_EXIT
    assert checkpoints(out) == [2, 4, 6]
    final = _run(micro_llama, out, cache)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "resuming after 6 stored edits" in final.stderr
    # nothing lost, nothing twice, the same values
    pd.testing.assert_frame_equal(scores(out), clean)
    assert snapshot_entries(out) == ["edits-000000012"]  # no staging folder, no stale snapshot


def _wait_stopped(proc: forked.Started | subprocess.Popen, timeout: float = 120) -> None:
    """Until ``proc`` has stopped itself at its fault point (state T in /proc)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the process never reached its fault point")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_a_second_run_on_the_same_store_stops_at_once_and_the_first_finishes(
    tmp_path, micro_llama, clean
):
    out, cache = tmp_path / "out", tmp_path / "cache"
    first = forked.start(_args(micro_llama, out), _env(cache, "after-checkpoint:1:stop"))
    try:
        _wait_stopped(first)  # it holds the store, mid-run
        second = _run(micro_llama, out, cache)
        error = one_line_error(second)
        assert f"the results folder {out} is in use by process {first.pid}" in error
        assert "use another --out" in error
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-3000:]
    cells = load_results(out).cells()
    assert cells["status"].tolist() == ["done"]  # the second process overwrote nothing
    pd.testing.assert_frame_equal(scores(out), clean)


POCKET_SCRIPT = """
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from editbench.tasks.pocket import PocketConfig, PocketWorld
from editbench.tasks.pocket_model import PocketModelConfig, ensure_pocket_model
config = PocketModelConfig(vocab_size=300, hidden_size=16, intermediate_size=32, n_layers=1, \
n_heads=2, steps=8,
                           batch_size=8)
print(ensure_pocket_model(PocketWorld(PocketConfig(n_entities=20)), Path(sys.argv[1]), config), \
flush=True)
"""


def _pocket(cache: Path, fault: str | None = None) -> forked.Started:
    return forked.start([sys.executable, "-c", POCKET_SCRIPT, str(cache)], _env(cache, fault))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_the_pocket_model_is_trained_once_and_killed_training_leaves_nothing(tmp_path):
    cache = tmp_path / "cache"
    killed = _pocket(cache, "pocket-training:3")
    killed.communicate(timeout=300)
    assert killed.returncode == FAULT_EXIT
    models = cache / "models"

    def entries() -> list[Path]:  # models and staging folders (the locks live in models/.locks)
        return [p for p in models.iterdir() if p.name != ".locks"]

    assert [p.name[:8] for p in entries()] == [".pocket-"]  # its staging folder
    first = _pocket(cache, "pocket-training:3:stop")
    try:
        _wait_stopped(first)
        staging = entries()
        # the killed one's is gone
        assert len(staging) == 1 and staging[0].name.startswith(".pocket-")
        second = _pocket(cache)
        deadline = time.time() + 120
        waited = ""  # it blocks on the lock and says for whom
        while "waiting for" not in waited and second.poll() is None and time.time() < deadline:
            time.sleep(0.05)
            waited = second.stderr_so_far()
        waited = next((line for line in waited.splitlines() if "waiting for" in line), waited)
        assert f"waiting for process {first.pid}" in waited and "pocket model" in waited
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out_first, _ = first.communicate(timeout=300)
    out_second, log_second = second.communicate(timeout=300)
    assert first.returncode == 0 and second.returncode == 0, log_second
    assert out_first == out_second
    assert (
        "training the pocket model" not in log_second
        and "loaded the cached pocket model" in log_second
    )
    assert [p.name for p in entries()] == [Path(out_first.strip()).name]


def _file_size_limit(limit: int):
    """Set in the run's process before it starts (picklable, for tests/forked.py)."""
    return partial(resource.setrlimit, resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_ends_in_one_line_and_the_rerun_loses_nothing(tmp_path, micro_llama, clean):
    out, cache = tmp_path / "out", tmp_path / "cache"
    # no file may grow past 352 KiB: the store's WAL reaches that after two of the six checkpoints
    # (measured: 272 KiB holds one, 320 two, 384 three; a run's start now writes its edits' texts)
    full = _run(micro_llama, out, cache, preexec=_file_size_limit(352 * 1024))
    error = one_line_error(full)
    assert str(out) in error and "rerun the same command to resume" in error
    stored = checkpoints(out)
    assert 0 < len(stored) < len(CHECKPOINTS)  # it failed mid-run
    status = load_results(out).cells()["status"].tolist()
    # recorded, or said in one line
    assert status == ["failed"] or "recording the failure" in full.stderr
    resumed = _run(micro_llama, out, cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    pd.testing.assert_frame_equal(scores(out), clean)


def _without_file_permission_override() -> None:
    """Root ignores file permissions; drop the capabilities that let it (from the bounding set, so
    the exec'd process runs without them), so a read-only folder is read-only for the test too."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _read_only(folder: Path) -> None:
    for path in (folder, *folder.rglob("*")):
        path.chmod(0o555 if path.is_dir() else 0o444)


def _writable(folder: Path) -> None:
    for path in (folder, *folder.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "editbench.harness.cli.group", *args], env=_env(cache),
        capture_output=True, text=True, timeout=300, preexec_fn=_without_file_permission_override
    )


WAL_LEFT_BEHIND = """
import os, sys
from editbench.core.records import ScoreRow
from editbench.core.store import ResultsStore
store = ResultsStore(sys.argv[1])
store.ensure_run("r1", task="pocket", model="m", config={}, versions={}, device="cpu", seed=0, \
git_sha=None,
                 dataset_hash="h", n_edits=4)
store.start_cell("r1", "ft-m", {}, "c")
for n in (2, 4):
    store.commit_checkpoint("r1", "ft-m", n, [ScoreRow(p, f"u{p}", "efficacy_acc", 1.0) \
for p in range(n)], [], 1)
os._exit(9)  # killed: the committed checkpoints are in the WAL only
"""


@pytest.mark.skipif(sys.platform != "linux", reason="drops root's capabilities with prctl")
def test_a_read_only_store_is_reported_and_refuses_a_writer_in_one_line(
    tmp_path, micro_llama, clean, clean_run
):
    out, cache = clean_run, tmp_path / "cache"
    killed = tmp_path / "killed"
    assert forked.run([sys.executable, "-c", WAL_LEFT_BEHIND, str(killed)], _env(cache)
                      ).returncode == 9
    assert (killed / "results.sqlite-wal").stat().st_size > 0
    # as archived or copied: the finished store without SQLite's side files, the killed one with its
    # WAL but without the WAL index; a reader in a read-only folder cannot recreate either
    for side in (*out.glob("results.sqlite-*"), killed / "results.sqlite-shm"):
        side.unlink()
    _read_only(out)
    _read_only(killed)
    try:
        before = sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*"))
        report = _cli("report", str(out), cache=cache)
        assert report.returncode == 0, report.stderr[-3000:]
        assert "ft-m" in report.stdout
        wal = _cli("report", str(killed), "--csv", str(tmp_path / "killed.csv"), cache=cache)
        assert wal.returncode == 0, wal.stderr[-3000:]
        csv = pd.read_csv(tmp_path / "killed.csv")
        assert set(csv["n_edits"]) == {2, 4}  # what the WAL held was read
        writer = subprocess.run(
            _args(micro_llama, out), env=_env(cache), capture_output=True, text=True,
            timeout=300, preexec_fn=_without_file_permission_override
        )
        error = one_line_error(writer)
        assert (
            f"cannot write the results folder {out}" in error
            and "choose a writable --out" in error
        )
        assert sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    finally:
        _writable(out)
        _writable(killed)
