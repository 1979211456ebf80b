"""What a user sees (issue 34): the commands of the project's description as written, and a
terminal table that fits 100 columns."""

from __future__ import annotations

from pathlib import Path

import pytest
from user_stores import DEFAULT_LADDER, DEFAULT_METHODS, default_run, fading, invoke, write_run

from editbench.core.outputs import PAGE_MARK
from editbench.reports.summary import WIDTH, headline_keys, run_board, terminal_table


@pytest.fixture(scope="module")
def default_store(tmp_path_factory) -> Path:
    return default_run(tmp_path_factory.mktemp("default") / "editbench-results")


@pytest.fixture(scope="module")
def board(default_store):
    return run_board(default_store, "run-a")


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    """Two methods, two checkpoints, three metrics: for the commands' own behaviour (quick)."""
    return write_run(tmp_path_factory.mktemp("small") / "editbench-results",
                     {"a": fading, "b": fading}, ladder=(10, 20),
                     metrics=("efficacy_acc", "portability_acc", "efficacy_gen_em"))


# -- the terminal table ----------------------------------------------------------------------------
def test_the_default_runs_table_fits_100_columns(board):
    text = terminal_table(board)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH
    # the headline columns of both families, each method once, at the final edit count
    assert lines[0].split() == ["method", "edits", "efficacy", "general.", "specif.", "eff.(gen)",
                                "gen.(gen)", "spec.(gen)", "retention", "collapse"]
    body = lines[2:2 + len(DEFAULT_METHODS)]
    assert [line.split()[0] for line in body] == sorted(DEFAULT_METHODS)
    assert all(line.split()[1] == str(DEFAULT_LADDER[-1]) for line in body)
    assert "left out" not in text  # nothing had to go


def test_retention_and_collapse_fold_the_earlier_checkpoints(board):
    rows = {line.split()[0]: line.split() for line in terminal_table(board).splitlines()[2:14]}
    # ft-l starts near 0.35 and loses 0.004 per edit: below half its start by 50 edits
    collapse = int(rows["ft-l"][-1])
    assert collapse in DEFAULT_LADDER and collapse <= 100
    assert float(rows["ft-l"][-2]) < 0.5
    # retrieval's rate does not move (index 8 of 12: 8 % 4 == 0): no collapse
    assert rows["retrieval"][-1] == "-" and 0.6 < float(rows["retrieval"][-2]) < 1.6


def test_a_wider_terminal_shows_intervals_a_narrow_one_leaves_columns_out(board):
    wide = terminal_table(board, width=240)
    assert max(len(line) for line in wide.splitlines()) <= 240 and "(0." in wide
    narrow = terminal_table(board, width=60)
    table = narrow.split("\neach method")[0]
    assert max(len(line) for line in table.splitlines()) <= 60
    assert "left out to fit 60 columns" in " ".join(narrow.split())


def test_columns_and_all_give_the_rest(board, small_store):
    from editbench.reports.summary import TableChoice

    named = TableChoice("portability_acc,eff.(gen)").render(board).splitlines()
    assert named[0].split()[:4] == ["method", "edits", "portability_acc", "eff.(gen)"]
    every = TableChoice(everything=True).render(board)
    assert "locality_unrelated_agree" in every
    # every checkpoint: a row per method and edit count
    assert sum(line.startswith("wise ") for line in every.splitlines()) == len(DEFAULT_LADDER)
    result = invoke("report", small_store, "--columns", "portability_acc", "--all")
    assert result.exit_code == 0, result.output
    assert sum(line.startswith("a ") for line in result.output.splitlines()) == 2
    bad = invoke("report", small_store, "--columns", "efficacy,nonesuch")
    assert bad.exit_code != 0 and "--columns nonesuch: no such column" in bad.output


def test_the_headline_family_leads(default_store):
    from editbench.core.protocol import from_record

    generated = from_record({"name": "x", "headline": "generated", "generation": "wild",
                             "edits_per_turn": 10})
    assert headline_keys(generated)[:3] == ["efficacy_gen_em", "generalization_gen_em",
                                            "specificity_gen_agree"]
    assert headline_keys(generated)[3] == "efficacy_acc"


# -- report and publish with no argument ---------------------------------------------------------
def test_report_alone_reads_editbench_results(small_store):
    result = invoke("report", cwd=small_store.parent)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("pocket, protocol editbench")
    assert max(len(line) for line in result.output.splitlines()) <= WIDTH


def test_report_html_alone_writes_editbench_report(tmp_path):
    write_run(tmp_path / "editbench-results", {"a": fading}, ladder=(10,),
              metrics=("efficacy_acc",))
    # a folder of the user's under that name is refused, and left as it was
    mine = tmp_path / "editbench-report" / "index.html"
    mine.parent.mkdir()
    mine.write_text("my notes")
    refused = invoke("report", "--html", cwd=tmp_path)
    assert refused.exit_code != 0 and "editbench did not write" in refused.output
    assert mine.read_text() == "my notes"
    mine.unlink()
    result = invoke("report", "--html", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert f"report: {Path('editbench-report') / 'index.html'}" in result.output
    assert PAGE_MARK in mine.read_text()
    site = invoke("publish", cwd=tmp_path)
    assert site.exit_code == 0, site.output
    assert (tmp_path / "editbench-site" / "index.html").is_file()


def test_report_without_results_says_where_it_looked(tmp_path):
    for command in ("report", "publish"):
        result = invoke(command, cwd=tmp_path)
        assert result.exit_code != 0
        line = result.output.strip().splitlines()[-1]
        assert "editbench-results" in line and "name the folder" in line
        assert not (tmp_path / "editbench-site").exists()


# -- the run of the project's description, as written ----------------------------------------------
def test_the_readme_run_plans_20000_edits_in_a_world_sized_for_them(tmp_path, monkeypatch):
    """``editbench run --methods rledit,alphaedit --edits 20000`` (here with --dry-run, which
    loads and trains nothing) on the default task: the pocket world is sized for the count, and a
    line says so and what a real run will train."""
    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))
    result = invoke("run", "--methods", "rledit,alphaedit", "--edits", "20000", "--dry-run",
                    cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "task pocket (eval split), 20000 edits in 2000 turns" in result.output
    note = next(line for line in result.output.splitlines() if "larger world" in line)
    assert "--param pocket.n_entities=" in note and "trained for it on first use" in note
    assert not (tmp_path / "editbench-results").exists()


def test_a_world_the_user_set_is_not_resized_and_the_error_says_how(tmp_path, monkeypatch):
    from editbench.tasks.pocket import PocketTask

    monkeypatch.setenv("EDITBENCH_CACHE", str(tmp_path / "cache"))
    result = invoke("run", "--methods", "ft-m", "--edits", "1000", "--param",
                    "pocket.n_entities=120", "--dry-run", cwd=tmp_path)
    assert result.exit_code != 0
    line = result.output.strip().splitlines()[-1]
    wanted = PocketTask.sized_for(1000)["n_entities"]
    assert "--edits 1000" in line and f"--param pocket.n_entities={wanted} makes enough" in line
    # and that setting does make enough
    from editbench.core.task import TaskOptions
    from editbench.tasks.pocket import PocketConfig

    assert len(PocketTask(TaskOptions(), PocketConfig(n_entities=int(wanted))).records()) >= 1000
