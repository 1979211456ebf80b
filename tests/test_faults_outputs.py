"""Nothing the user owns is overwritten or broken (issue 31): output paths that are a store, a
snapshot or a file editbench did not write are refused in one line; a failed run and a damaged
store leave every reader with a correct result or one line, and the store's bytes as they were."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_faults_inputs import error_line
from test_report import build_store

from editbench.core.outputs import FIRST_LINES, PAGE_MARK
from editbench.core.store import load_results
from editbench.harness.cli.group import main


def digest(folder: Path) -> str:
    """The store's bytes and every other file's name and content; aside: the folder's lock file,
    which a writer creates, and SQLite's shared-memory index and empty WAL, which a reader may."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".lock"
                       and not p.name.endswith("-shm")
                       and not (p.name.endswith("-wal") and p.stat().st_size == 0)):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def store_bytes(folder: Path) -> bytes:
    """The store as a reader would find it: the database and its write-ahead log."""
    wal = folder / "results.sqlite-wal"
    return (folder / "results.sqlite").read_bytes() + (wal.read_bytes() if wal.exists() else b"")


@pytest.fixture
def store(tmp_path) -> Path:
    return build_store(tmp_path / "runs")


def invoke(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("option", ["--csv", "--md", "--latex"])
def test_a_report_never_writes_over_the_store(store, option):
    before = digest(store)
    line = error_line(invoke("report", store, option, store / "results.sqlite"))
    assert "is a results store" in line and option in line
    assert digest(store) == before
    assert len(load_results(store).scores()) > 0


@pytest.mark.parametrize("option,fmt", [("--csv", "csv"), ("--md", "md"), ("--latex", "latex")])
def test_a_file_editbench_did_not_write_is_refused_one_it_wrote_is_replaced(store, tmp_path,
                                                                            option, fmt):
    mine = tmp_path / f"notes.{fmt}"
    mine.write_text("my own notes\n")
    assert option in error_line(invoke("report", store, option, mine))
    assert mine.read_text() == "my own notes\n"
    ours = tmp_path / f"board.{fmt}"
    for _ in range(2):  # written, then replaced by the same command
        result = invoke("report", store, option, ours)
        assert result.exit_code == 0, result.output
    assert ours.read_text("utf-8").startswith(FIRST_LINES[fmt])


def test_the_marks_are_the_first_lines_the_tables_write(store):
    from editbench.reports.collect import collect
    from editbench.reports.leaderboard import build_boards
    from editbench.reports.tables import csv_text, latex, markdown

    boards = build_boards(collect([store]))
    for fmt, render in (("md", markdown), ("latex", latex), ("csv", csv_text)):
        assert render(boards).startswith(FIRST_LINES[fmt]), fmt


def test_pages_go_only_to_a_new_empty_or_earlier_report_folder(store, tmp_path):
    before = digest(store)
    assert "is a results folder" in error_line(invoke("report", store, "--html", store))
    assert "inside the results folder" in error_line(
        invoke("publish", store, "--site", store / "snapshots" / "x"))
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "index.html").write_text("<p>my page</p>")
    assert "did not write" in error_line(invoke("publish", store, "--site", theirs))
    assert (theirs / "index.html").read_text() == "<p>my page</p>"
    pages = tmp_path / "pages"
    for _ in range(2):
        result = invoke("report", store, "--html", pages)
        assert result.exit_code == 0, result.output
    assert PAGE_MARK in (pages / "index.html").read_text("utf-8")
    assert digest(store) == before


def test_run_out_inside_a_results_folder_or_empty_is_refused(store, tmp_path):
    (store / "snapshots" / "r" / "ft-m").mkdir(parents=True)
    for out, message in ((store / "snapshots" / "r" / "ft-m", "inside the results folder"),
                         ("", "--out needs a path")):
        assert message in error_line(invoke("run", "--methods", "ft-m", "--out", out,
                                            "--dry-run"))


def test_selfcheck_out_refuses_a_file_it_did_not_write_before_any_check(tmp_path):
    mine = tmp_path / "figures.json"
    mine.write_text('{"mine": 1}\n')
    assert "editbench did not write it" in error_line(invoke("selfcheck", "--out", mine))
    assert mine.read_text() == '{"mine": 1}\n'


def test_a_run_whose_model_fails_to_load_leaves_a_readable_store(tmp_path, micro_gpt2):
    broken = tmp_path / "no-weights"
    broken.mkdir()
    for path in micro_gpt2.iterdir():
        if path.suffix != ".safetensors":
            (broken / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "runs"
    args = ["run", "--task", "pocket", "--param", "pocket.n_entities=20", "--methods", "ft-m",
            "--edits", "2", "--batch-size", "2", "--device", "cpu", "--out", out]
    assert "cannot load" in error_line(invoke(*args, "--model", broken))
    store = load_results(out)
    try:
        assert store.runs()["baseline"].tolist() in ([], [{}])  # no baseline, and no TypeError
    finally:
        store.close()
    assert invoke("report", out).exit_code == 0
    result = invoke(*args, "--model", micro_gpt2)
    assert result.exit_code == 0, result.output


DAMAGE = {
    "dropped scores table": ("DROP TABLE scores", "table 'scores' is missing"),
    "dropped value column": ("ALTER TABLE scores DROP COLUMN value", "lacks the column 'value'"),
    "text in a score": ("UPDATE scores SET value='abc' WHERE position=0",
                        "holds 'abc' where a number belongs"),
    "text in a time": ("UPDATE checkpoints SET edit_seconds='x'", "holds 'x' where a number"),
    "config not JSON": ("UPDATE runs SET config='{bad'", "config is not a JSON object"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_store_is_one_line_and_stays_as_it_was(store, case, micro_gpt2):
    sql, message = DAMAGE[case]
    conn = sqlite3.connect(store / "results.sqlite")
    conn.execute(sql)
    conn.commit()
    conn.close()
    before = store_bytes(store)
    assert message in error_line(invoke("report", store))
    assert message in error_line(invoke(
        "run", "--task", "pocket", "--param", "pocket.n_entities=20", "--model", micro_gpt2,
        "--methods", "ft-m", "--edits", "2", "--batch-size", "2", "--device", "cpu",
        "--out", store))
    assert store_bytes(store) == before


def test_train_and_export_never_write_into_a_results_folder(store):
    before = store_bytes(store)
    inside = store / "snapshots" / "editor"
    assert "inside the results folder" in error_line(
        invoke("train", "--method", "rledit", "--out", inside))
    for uri in (f"sqlite:///{store / 'results.sqlite'}", str(store / "run-files" / "mlruns")):
        line = error_line(invoke("export", store, "--mlflow", uri))
        assert "--mlflow" in line
    assert store_bytes(store) == before and not inside.exists()
