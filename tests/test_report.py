"""``editbench report`` / ``publish`` on stores built through the store's write API.

The stores hold a clear winner, a tie, a diverged and a failed method, and strings that try to
inject markup, so each test checks one promise of the reports against known answers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from editbench.core.records import Metric, PhaseTime, SamplePrompt, SampleRow, ScoreRow
from editbench.core.store import ResultsStore
from editbench.harness.cli.group import main
from editbench.reports.collect import collect
from editbench.reports.leaderboard import build_boards
from editbench.reports.tables import latex, markdown, md_escape, tex_escape

EVIL = '<script>window.__pwned = 1</script>'
EVIL_UID = '<img src=x onerror="window.__pwned = 2">'
EVIL_ERROR = 'boom </pre><script>window.__pwned = 3</script>'
#: an edited model's answer that tries to close the page's JSON block
EVIL_ANSWER = '</script><b>bold</b><script>window.__pwned = 5</script>'
CHECKPOINTS = (10, 40)
BATCH = 10


def build_store(folder: Path, run_id: str = "run-a", task: str = "pocket", seed: int = 0,
                methods: dict[str, dict[str, float]] | None = None, model: str = "org/<b>model</b>",
                device: str = "cpu (test)", config_extra: dict | None = None) -> Path:
    """A run of 40 edits in batches of 10 with checkpoints at 10 and 40. ``methods`` maps a label
    to the success rate of each metric; per-edit scores are seeded Bernoulli draws."""
    methods = methods or {
        "strong": {"efficacy_acc": 0.95, "generalization_acc": 0.5, "specificity_agree": 0.9},
        "weak": {"efficacy_acc": 0.3, "generalization_acc": 0.5, "specificity_agree": 0.9},
        EVIL: {"efficacy_acc": 0.6, "generalization_acc": 0.5, "specificity_agree": 0.9},
    }
    config = {"edits": 40, "batch_size": BATCH, "checkpoints": list(CHECKPOINTS), "seed": seed,
              "note": "</script><script>window.__pwned = 4</script>", **(config_extra or {})}
    rng = np.random.default_rng(seed)
    with ResultsStore(folder) as store:
        store.ensure_run(run_id, task=task, model=model, config=config, versions={"torch": "2.x"},
                         device=device, seed=seed, git_sha="abc123", dataset_hash="d5", n_edits=40)
        store.set_baseline(
            run_id, {"pre_edit_accuracy": 0.97, "pre_edit_paraphrase_accuracy": float("nan")}
        )
        store.save_run_outline(
            run_id,
            [Metric("efficacy_acc", f"edit success {EVIL}"), Metric("generalization_acc", "g"),
             Metric("specificity_agree", "agreement with the unedited model")],
            [(start, start + BATCH) for start in range(0, 40, BATCH)],
        )
        store.save_sample_prompts(run_id, [
            SamplePrompt(p, EVIL_UID if p == 0 else f"u{p}", kind, 0, f"prompt {p} {kind}",
                         f"target {p}", f"unedited {p}")
            for p in range(40) for kind in ("edit", "neighbour")])
        for index, (label, rates) in enumerate(methods.items()):
            store.start_cell(run_id, label, {"lr": 0.1, "label": label}, f"h{index}")
            done = 0
            for n_edits in CHECKPOINTS:
                times = [
                    PhaseTime("edit", step, 0.2 + 0.01 * (index + step))
                    for step in range(done // BATCH, n_edits // BATCH)
                ]
                rows = [
                    ScoreRow(p, EVIL_UID if p == 0 else f"u{p}", metric, float(rng.random() < rate))
                    for p in range(n_edits) for metric, rate in rates.items()
                ]
                evaluation = [
                    PhaseTime("eval", n_edits, 0.1), PhaseTime("eval_forward", n_edits, 0.06)
                ]
                answers = [
                    SampleRow(p, "edit", 0, EVIL_ANSWER if p == 0 else f"target {p}",
                              rng.random() < rates["efficacy_acc"], p % 3 != 0)
                    for p in range(n_edits)
                ] + [SampleRow(p, "neighbour", 0, f"unedited {p}", True, True)
                     for p in range(n_edits)]
                store.commit_checkpoint(run_id, label, n_edits, rows, [*times, *evaluation],
                                        (100 + 10 * index) * 2**20, samples=answers)
                done = n_edits
            store.finish_cell(run_id, label, "done")
        store.start_cell(run_id, "boom", {}, "hb")
        store.commit_checkpoint(
            run_id, "boom", 10, [ScoreRow(p, f"u{p}", "efficacy_acc", 1.0) for p in range(10)],
            [PhaseTime("edit", 0, 0.5)], 2**20
        )
        store.finish_cell(run_id, "boom", "diverged", diverged_at=20)
        store.start_cell(run_id, "crash", {}, "hc")
        store.finish_cell(run_id, "crash", "failed", error=EVIL_ERROR)
        store.record_timings(run_id, "", [PhaseTime("baseline", 0, 1.5)])
    return folder


def wide_methods() -> dict[str, dict[str, float]]:
    """The default methods with a metric beyond the protocol's headline (portability)."""
    return {label: {**rates, "portability_acc": 0.4} for label, rates in {
        "strong": {"efficacy_acc": 0.95, "generalization_acc": 0.5, "specificity_agree": 0.9},
        "weak": {"efficacy_acc": 0.3, "generalization_acc": 0.5, "specificity_agree": 0.9},
        EVIL: {"efficacy_acc": 0.6, "generalization_acc": 0.5, "specificity_agree": 0.9},
    }.items()}


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def site(store_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = CliRunner().invoke(main, ["publish", str(store_dir), "--site", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _row(board, label, n_edits):
    return next(r for r in board.rows if r.label == label and r.n_edits == n_edits)


def test_the_winner_is_marked_within_each_edit_count_and_overlaps_are_ties(store_dir):
    (board,) = build_boards(collect([store_dir]))
    assert board.task == "pocket" and board.edit_counts == [10, 40]
    assert [c.key for c in board.columns][:3] == [
        "efficacy_acc", "generalization_acc", "specificity_agree"
    ]
    assert _row(board, "strong", 40).cells["efficacy_acc"].mark == "best"
    assert _row(board, "weak", 40).cells["efficacy_acc"].mark == ""
    # all three have the same generalization rate: whoever leads is only tied
    assert {
        _row(board, m, 40).cells["generalization_acc"].mark for m in ("strong", "weak", EVIL)
    } <= {"tie", ""}
    assert (
        _row(board, "strong", 40).cells["generalization_acc"].mark
        or _row(board, "weak", 40).cells["generalization_acc"].mark
    )
    # at 10 edits the diverged method (all 1.0) competes only with rows of 10 edits
    assert _row(board, "boom", 10).cells["efficacy_acc"].interval.mean == 1.0
    assert _row(board, "boom", 10).status == "diverged"
    winners = board.winners(40)
    assert winners["efficacy_acc"] == ("best", ["strong"])


def test_time_has_an_interval_over_batches_and_memory_is_one_measurement(store_dir):
    (board,) = build_boards(collect([store_dir]))
    strong = _row(board, "strong", 40)
    time = strong.cells["seconds_per_edit"].interval
    assert time.mean == pytest.approx(sum(0.2 + 0.01 * s for s in range(4)) / 40)
    assert time.n == 4 and time.low < time.mean < time.high
    # one batch: no interval
    assert _row(board, "strong", 10).cells["seconds_per_edit"].interval.low is None
    memory = _row(board, "weak", 40).cells["peak_memory_bytes"]
    assert memory.interval.mean == 110 * 2**20 and memory.interval.low is None
    # on a CPU it is the whole process's resident memory: shown, not ranked
    assert _row(board, "strong", 40).cells["peak_memory_bytes"].mark == ""
    column = next(c for c in board.columns if c.key == "peak_memory_bytes")
    assert not column.ranked and "not ranked" in column.description


def test_gpu_peak_memory_is_ranked(tmp_path):
    (board,) = build_boards(
        collect([build_store(tmp_path / "gpu", device="NVIDIA H100 80GB HBM3")])
    )
    assert _row(board, "strong", 40).cells["peak_memory_bytes"].mark == "best"


def test_intervals_do_not_depend_on_other_stores_loaded_beside(store_dir, tmp_path):
    other = build_store(tmp_path / "other", run_id="run-b", task="zsre", seed=3)
    alone = build_boards(collect([store_dir]))[0]
    together = {b.task: b for b in build_boards(collect([store_dir, other, store_dir]))}
    assert set(together) == {"pocket", "zsre"}
    assert _row(together["pocket"], "strong", 40) == _row(alone, "strong", 40)
    assert len(together["pocket"].rows) == len(alone.rows)  # the store named twice is read once


def test_seeds_of_a_sweep_are_pooled_and_other_setups_kept_apart(tmp_path):
    one = {"ft": {"efficacy_acc": 0.5}}
    first = build_store(tmp_path / "a", run_id="run-1", seed=0, methods=one)
    second = build_store(tmp_path / "b", run_id="run-2", seed=1, methods=one)
    (board,) = build_boards(collect([first, second]))
    row = _row(board, "ft", 40)
    assert row.seeds == (0, 1) and set(row.run_ids) == {"run-1", "run-2"}
    pooled = collect([first, second]).scores.query(
        "method == 'ft' and n_edits == 40 and metric == 'efficacy_acc'"
    )
    assert row.cells["efficacy_acc"].interval.n == 80
    assert row.cells["efficacy_acc"].interval.mean == pytest.approx(pooled["value"].mean())
    time = row.cells["seconds_per_edit"].interval
    assert time.n == 8 and time.mean == pytest.approx(
        2 * sum(0.2 + 0.01 * s for s in range(4)) / 80
    )
    assert {n.label for n in board.notes} == {
        "boom (seed 0)", "boom (seed 1)", "crash (seed 0)", "crash (seed 1)"
    }

    other = build_store(tmp_path / "c", run_id="run-3", seed=0, methods=one, model="org/other")
    (board,) = build_boards(collect([first, other]))
    assert {"ft (org/<b>model</b>)", "ft (org/other)"} <= set(board.labels())
    assert all(len(r.run_ids) == 1 for r in board.rows)


def test_notes_say_which_method_diverged_or_failed(store_dir):
    (board,) = build_boards(collect([store_dir]))
    notes = {n.label: n for n in board.notes}
    assert "diverged at 20 edits" in notes["boom"].text
    assert notes["crash"].status == "failed" and EVIL_ERROR in notes["crash"].text


def _scripts(html: str) -> list[str]:
    """The page's scripts that run (a ``type="application/json"`` block holds data)."""
    return re.findall(r"<script(?![^>]*application/json)\b[^>]*>(.*?)</script>", html,
                      flags=re.S | re.I)


def test_every_page_escapes_strings_from_the_data(site):
    pages = [site / "index.html", site / "tasks" / "pocket.html",
             *sorted((site / "runs").glob("*.html"))]
    assert len(pages) == 3
    for page in pages:
        html = page.read_text()
        scripts = _scripts(html)
        assert len(scripts) == 1 and "__pwned" not in scripts[0], page  # only our own script
        assert "<img src=x" not in html and "<b>model</b>" not in html and "<b>bold" not in html
        # outside the answers' JSON block (checked below, where it holds no '<'): only as text
        markup = re.sub(r'<script type="application/json".*?</script>', "", html, flags=re.S)
        assert "onerror=" not in markup.replace("onerror=&#34;", "")
    index = (site / "index.html").read_text()
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in index  # shown, as text
    run_page = next((site / "runs").glob("*.html")).read_text()
    assert "boom &lt;/pre&gt;&lt;script&gt;" in run_page
    # the answers' JSON block ends where the page says, and holds the stored text escaped
    (data,) = re.findall(r'<script type="application/json" id="answers-data">(.*?)</script>',
                         run_page, flags=re.S)
    assert "<" not in data and json.loads(data)["texts"].count(EVIL_ANSWER) == 1
    assert "&lt;/script&gt;&lt;script&gt;window.__pwned = 4" in run_page


def test_the_page_allows_only_its_own_script(site):
    from editbench.reports.render import script_hash

    html = (site / "index.html").read_text()
    (script,) = _scripts(html)
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert f"script-src '{script_hash(script)}'" in policy and "default-src 'none'" in policy
    # nothing from a CDN
    assert "http://" not in html.replace("http-equiv", "") and "https://" not in html


def test_the_site_has_index_task_and_run_pages_plots_and_json(site):
    assert (site / ".nojekyll").exists()
    for kind in ("metrics", "cost", "retention", "pareto"):
        svg, png = site / "plots" / f"pocket-{kind}.svg", site / "plots" / f"pocket-{kind}.png"
        # SVG only: the pages show it, and drawing a second format doubled the report's time
        assert svg.read_text().lstrip().startswith("<?xml") and not png.exists()
        assert f"plots/pocket-{kind}.svg" in (site / "tasks" / "pocket.html").read_text()
    index = (site / "index.html").read_text()
    assert 'href="tasks/pocket.html"' in index and 'href="runs/run-a.html"' in index
    data = json.loads((site / "leaderboard.json").read_text())
    (board,) = data["boards"]
    cell = next(
        r for r in board["rows"] if r["label"] == "strong" and r["n_edits"] == 40
    )["cells"]["efficacy_acc"]
    assert cell["mark"] == "best" and cell["low"] <= cell["mean"] <= cell["high"]
    assert {r["run_id"] for r in data["runs"]} == {"run-a"}
    assert data["runs"][0]["baseline"]["pre_edit_paraphrase_accuracy"] is None  # NaN is not JSON
    run_page = (site / "runs" / "run-a.html").read_text()
    for shown in (
        "abc123", "d5", "cpu (test)", "diverged", "at 20 edits", "baseline", "Phase timings"
    ):
        assert shown in run_page, shown


def test_report_writes_html_markdown_latex_and_csv(store_dir, tmp_path):
    out = tmp_path / "out"
    args = ["report", str(store_dir), "--html", str(out / "html"), "--md", str(out / "board.md"),
            "--latex", str(out / "board.tex"), "--csv", str(out / "board.csv")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    index = (out / "html" / "index.html").read_text()
    # plots on the one page
    assert "plots/pocket-metrics.svg" in index and 'class="board sortable"' in index
    md = (out / "board.md").read_text()
    assert "| strong | 40 | **" in md and "\\<script\\>" in md and "<script>" not in md
    tex = (out / "board.tex").read_text()
    assert (
        r"\textbf{" in tex
        and r"\textless{}script\textgreater{}" in tex
        and "<script>" not in tex
    )
    csv = (out / "board.csv").read_text().splitlines()
    assert csv[0] == "task,protocol,run_id,method,n_edits,status,column,mean,low,high,n,mark"
    assert any(
        line.startswith("pocket,editbench,run-a,strong,40,done,efficacy_acc,")
        and line.endswith(",best")
        for line in csv
    )


def test_report_prints_the_table_or_markdown_and_names_a_missing_store(store_dir, tmp_path):
    result = CliRunner().invoke(main, ["report", str(store_dir)])
    assert result.exit_code == 0 and result.output.startswith("pocket, protocol editbench\n")
    assert "retention" in result.output.splitlines()[1]
    result = CliRunner().invoke(main, ["report", str(store_dir), "--md"])
    assert result.exit_code == 0 and "## pocket" in result.output
    missing = CliRunner().invoke(
        main, ["report", str(tmp_path / "nowhere"), "--html", str(tmp_path / "x")]
    )
    assert missing.exit_code != 0 and "nowhere holds no editbench results" in missing.output


def test_markdown_and_latex_escapes_keep_tables_intact(store_dir):
    assert md_escape("a|b *c* <x>\nd") == r"a\|b \*c\* \<x\> d"
    assert tex_escape("50% of a_b & {c}") == r"50\% of a\_b \& \{c\}"
    (board,) = build_boards(collect([store_dir]))
    tables, current = [], []
    for line in markdown([board]).splitlines() + [""]:
        if line.startswith("| "):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    assert len(tables) == 2  # the leaderboard and the lifelong summary
    for table in tables:
        assert len({line.count(" | ") for line in table}) == 1  # every row has the header's cells
    assert latex([board]).count(r"\begin{tabular}") == 2


def test_capability_sets_get_a_column_with_a_wilson_interval(tmp_path):
    folder = build_store(
        tmp_path / "r", methods={"a": {"efficacy_acc": 0.5}, "b": {"efficacy_acc": 0.5}}
    )
    with ResultsStore(folder) as store:
        store.save_unedited_capability("run-a", {"sst2": (200, 0.8)})
        for method, accuracy in (("a", 0.78), ("b", 0.4)):
            store.commit_checkpoint(
                "run-a", method, 80, [], [], 1, capability={"sst2": (200, accuracy)}
            )
    (board,) = build_boards(collect([folder]))
    column = next(c for c in board.columns if c.key == "capability:sst2")
    assert column.higher_is_better and "unedited model: 0.800" in column.description
    a, b = (
        _row(board, "a", 80).cells["capability:sst2"],
        _row(board, "b", 80).cells["capability:sst2"],
    )
    assert a.mark == "best" and b.mark == "" and a.interval.low < 0.78 < a.interval.high
    assert _row(board, "a", 40).cells["capability:sst2"].interval is None  # not probed at 40
    from editbench.reports.site import run_views

    view = run_views(collect([folder]))["run-a"]
    assert view.capability_sets == ["sst2"] and view.capability[0]["method"] == "(unedited)"


def test_run_page_totals_do_not_count_forward_passes_twice(store_dir):
    from editbench.reports.site import run_views

    view = run_views(collect([store_dir]))["run-a"]
    assert view.phase_names.index("eval") < view.phase_names.index("eval_forward")
    strong = next(p for p in view.phases if p["method"] == "strong")
    edit_seconds = sum(0.2 + 0.01 * step for step in range(4))
    assert strong["total"] == pytest.approx(edit_seconds + 2 * 0.1)  # eval_forward lies inside eval


def test_mirage_gap_collapse_point_and_retention_auc(tmp_path):
    """Generated and teacher-forced efficacy of the same edits give a per-edit gap (a column, not
    ranked); a method whose generated efficacy halves collapses there; retention AUC is the mean
    over the stream's slices."""
    folder = tmp_path / "r"
    rates = {"fading": {10: (1.0, 0.8), 40: (1.0, 0.3)}, "steady": {10: (0.9, 0.9), 40: (0.9, 0.9)}}
    with ResultsStore(folder) as store:
        store.ensure_run("g", task="pocket", model="m", config={}, versions={}, device="cpu",
                         seed=0, git_sha=None, dataset_hash="d", n_edits=40)
        store.save_run_outline("g", [Metric("efficacy_acc", "tf"), Metric("efficacy_gen_em", "gen"),
                                  Metric("specificity_gen_agree", "agree")],
                               [(0, 10), (10, 20), (20, 30), (30, 40)])
        for method, by_n in rates.items():
            store.start_cell("g", method, {}, method)
            for n_edits, (acc, gen) in by_n.items():
                rows = []
                for p in range(n_edits):
                    # the first edits hold: retention falls to the right
                    generated = float(p < round(gen * n_edits))
                    rows += [ScoreRow(p, f"u{p}", "efficacy_acc", acc),
                             ScoreRow(p, f"u{p}", "efficacy_gen_em", generated),
                             ScoreRow(p, f"u{p}", "specificity_gen_agree", 1.0)]
                store.commit_checkpoint("g", method, n_edits, rows, [], 1)
            store.finish_cell("g", method, "done")
    (board,) = build_boards(collect([folder]))
    gap = next(c for c in board.columns if c.key == "efficacy_mirage_gap")
    assert not gap.ranked and not gap.higher_is_better
    assert (
        _row(board, "fading", 40).cells["efficacy_mirage_gap"].interval.mean
        == pytest.approx(0.7)
    )
    assert {r.cells["efficacy_mirage_gap"].mark for r in board.rows} == {""}
    summary = {s.label: s for s in board.lifelong}
    assert summary["fading"].efficacy == "efficacy_gen_em"
    assert (summary["fading"].collapse_at, summary["fading"].collapse_reason) == (40, "efficacy")
    assert (
        summary["steady"].collapse_at is None
        and summary["steady"].collapse_text == "none up to 40"
    )
    assert summary["fading"].auc["efficacy_gen_em"] == pytest.approx(0.3)
    assert summary["steady"].auc["efficacy_acc"] == pytest.approx(0.9)
    assert "none up to 40" in markdown([board]) and "collapse point" in latex([board])
    result = CliRunner().invoke(main, [
        "report", str(folder), "--html", str(tmp_path / "html"),
        "--csv", str(tmp_path / "cells.csv"),
    ])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "html" / "leaderboard.json").read_text())
    assert data["boards"][0]["lifelong"][0]["collapse_at"] == 40
    csv = (tmp_path / "cells.csv").read_text()
    assert "retention_auc:efficacy_gen_em" in csv and "efficacy_mirage_gap" in csv
    assert "Lifelong summary" in (tmp_path / "html" / "index.html").read_text()


def test_md_latex_and_csv_without_a_file_print_to_standard_output(store_dir, tmp_path):
    for option, start in (("--md", "# editbench leaderboard"),
                          ("--latex", "% editbench leaderboard"),
                          ("--csv", "task,protocol,run_id,method")):
        result = CliRunner().invoke(main, ["report", str(store_dir), option])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(start)
    written = CliRunner().invoke(
        main, ["report", str(store_dir), "--md", str(tmp_path / "board.md")]
    )
    assert (
        written.exit_code == 0
        and (tmp_path / "board.md").read_text().startswith("# editbench leaderboard")
    )


def test_share_metrics_are_plotted_on_the_whole_zero_to_one_scale(store_dir):
    from editbench.reports.plots import metrics_figure, palette

    (board,) = build_boards(collect([store_dir]))
    fig = metrics_figure(board, palette(board.labels()))
    limits = {ax.get_title(): ax.get_ylim() for ax in fig.axes if ax.get_title()}
    assert limits["specificity (agree)"] == pytest.approx((-0.02, 1.02))


def test_a_local_model_is_named_by_its_folder_and_its_path_stays_on_the_run_page(tmp_path):
    folder = build_store(tmp_path / "r", model="/home/someone/models/pocket-0bd311")
    (board,) = build_boards(collect([folder]))
    assert board.models == ["pocket-0bd311"]
    assert "/home/someone" not in markdown([board])
    from editbench.reports.site import run_views

    assert run_views(collect([folder]))["run-a"].model == "/home/someone/models/pocket-0bd311"
