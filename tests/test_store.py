import sqlite3
import subprocess
import sys
import textwrap

import pytest

from editbench.core.records import PhaseTime, ScoreRow
from editbench.core.store import SCHEMA_VERSION, ResultsStore, load_results


def _fill(store: ResultsStore) -> None:
    store.ensure_run("r1", task="pocket", model="m", config={"a": 1}, versions={}, device="cpu",
                     seed=0, git_sha=None, dataset_hash="h", n_edits=4)
    store.start_cell("r1", "ft-m", {"lr": 1}, "c1")
    for n in (2, 4):
        rows = [ScoreRow(p, f"u{p}", m, float(p + n))
                for p in range(n) for m in ("efficacy_acc", "specificity_agree")]
        store.commit_checkpoint(
            "r1", "ft-m", n, rows, [PhaseTime("edit", n, 1.0), PhaseTime("eval", n, 0.5)], 100 * n
        )


def test_dataframe_api(tmp_path):
    with ResultsStore(tmp_path) as store:
        _fill(store)
    store = load_results(tmp_path)
    summary = store.summary()
    assert list(summary["n_edits"]) == [2, 4]
    assert summary["seconds_per_edit"].tolist() == [0.5, 0.5]  # cumulative edit time / edits
    assert summary.loc[summary.n_edits == 4, "efficacy_acc"].item() == pytest.approx(5.5)
    assert store.cell("r1", "ft-m").last_checkpoint == 4
    retention = store.retention(bins=2)
    assert len(retention[retention.n_edits == 4]) == 2
    assert store.runs().loc[0, "config"] == {"a": 1}


def test_a_duplicate_checkpoint_is_refused_and_nothing_changes(tmp_path):
    with ResultsStore(tmp_path) as store:
        _fill(store)
        with pytest.raises(sqlite3.IntegrityError):
            store.commit_checkpoint(
                "r1", "ft-m", 4, [ScoreRow(0, "u0", "efficacy_acc", 9.0)], [], 1
            )
        assert len(store.scores()) == 12


def test_the_store_survives_a_crash_mid_transaction(tmp_path):
    with ResultsStore(tmp_path) as store:
        _fill(store)
    crash = textwrap.dedent(f"""
        import os
        from editbench.core.records import ScoreRow
        from editbench.core.store import ResultsStore
        store = ResultsStore({str(tmp_path)!r})
        store.conn.execute("BEGIN IMMEDIATE")
        store.conn.execute("INSERT INTO checkpoints VALUES ('r1', 'ft-m', 6, 1, 1, 1, 1, 'now')")
        store.conn.executemany("INSERT INTO scores VALUES ('r1', 'ft-m', 6, ?, 'u', \
'efficacy_acc', 1.0)",
                               [(i,) for i in range(1000)])
        os._exit(9)  # dies holding an open transaction
    """)
    result = subprocess.run([sys.executable, "-c", crash])
    assert result.returncode == 9
    store = load_results(tmp_path)
    assert sorted(store.checkpoints()["n_edits"]) == [2, 4]
    assert len(store.scores()) == 12
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no editbench results"):
        load_results(tmp_path / "nowhere")


def test_reading_a_store_never_writes_to_it(tmp_path):
    with ResultsStore(tmp_path) as store:
        _fill(store)
        # a store written before the capability table existed
        store.conn.execute("DROP TABLE capability")
    before = (tmp_path / "results.sqlite").stat().st_mtime_ns
    store = load_results(tmp_path)
    assert store.capability().empty and len(store.scores()) == 12
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store.conn.execute("DELETE FROM scores")
    store.close()
    assert (tmp_path / "results.sqlite").stat().st_mtime_ns == before


def test_a_finished_cell_keeps_its_status_and_restart_drops_one_method(tmp_path):
    with ResultsStore(tmp_path) as store:
        _fill(store)
        store.start_cell("r1", "ft-l", {}, "c2")
        store.commit_checkpoint("r1", "ft-l", 2, [ScoreRow(0, "u0", "efficacy_acc", 1.0)],
                                [PhaseTime("edit", 0, 1.0)], 1,
                                snapshot={"weights.safetensors": "ab" * 32})
        store.finish_cell("r1", "ft-m", "done")
        # must not overwrite 'done'
        store.finish_cell("r1", "ft-m", "failed", error="a late error handler")
        assert store.cell("r1", "ft-m").status == "done"
        assert store.snapshot_checksums("r1", "ft-l", 2) == {"weights.safetensors": "ab" * 32}
        store.drop_cell("r1", "ft-l")
        assert store.cell("r1", "ft-l") is None and store.snapshot_checksums("r1", "ft-l", 2) == {}
        assert (
            set(store.scores()["method"]) == {"ft-m"}
            and set(store.timings()["method"]) == {"ft-m"}
        )


def test_a_store_without_snapshot_checksums_gains_the_table_when_a_writer_opens_it(tmp_path):
    with ResultsStore(tmp_path) as store:
        _fill(store)
        store.conn.execute("DROP TABLE snapshot_files")  # as an editbench before checksums wrote it
    with ResultsStore(tmp_path) as store:
        # resumes unchecked
        assert store.version == SCHEMA_VERSION and store.snapshot_checksums("r1", "ft-m", 4) == {}
        assert store.cell("r1", "ft-m").last_checkpoint == 4
