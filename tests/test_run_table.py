"""The table ``editbench run`` prints: each cell with its interval and the leaderboard's marks."""

from editbench.reports.leaderboard import Board, Cell, Row
from editbench.reports.metrics import Column
from editbench.reports.stats import Interval
from editbench.reports.summary import (
    MARKS_NOTE,
    board_frame,
    final_frame,
    format_table,
    run_board,
)

COLUMNS = [Column("efficacy_acc", "efficacy (acc)", "", True),
           Column("peak_memory_bytes", "peak memory", "", False, is_cost=True, ranked=False)]


def row(label: str, n_edits: int, mean: float, low: float, high: float, mark: str) -> Row:
    return Row("r", label, label, n_edits, "done",
               {"efficacy_acc": Cell(Interval(mean, low, high, 10), mark),
                "peak_memory_bytes": Cell(Interval(3 * 2**20, None, None, 1))})


def test_cells_show_intervals_and_marks_like_the_markdown():
    board = Board("t", COLUMNS, [row("b", 10, 0.5, 0.4, 0.6, "tie"),
                                 row("a", 10, 0.55, 0.45, 0.65, "tie"),
                                 row("a", 20, 0.9, 0.8, 1.0, "best"),
                                 row("b", 20, 0.2, 0.1, 0.3, "")],
                  ["r"], ["m"], [10, 20])
    text = format_table(board_frame(board))
    lines = text.splitlines()
    assert lines[0].split() == ["method", "edits", "efficacy", "peak", "MiB"]
    # method by method
    assert lines[2].split()[:2] == ["a", "10"] and lines[3].split()[:2] == ["a", "20"]
    assert "0.550 ≈ (0.450–0.650)" in lines[2] and "0.900 ★ (0.800–1.000)" in lines[3]
    # memory: no interval
    assert "0.200 (0.100–0.300)" in lines[5] and lines[5].rstrip().endswith(" 3")
    assert "★" not in lines[5] and "≈" not in lines[5]


def test_the_run_table_ranks_the_methods_of_the_run(tmp_path, micro_gpt2):
    """Two methods of one run, through the CLI: every cell has an interval, and the note says
    how to read it."""
    import json

    from click.testing import CliRunner
    from conftest import write_edits

    from editbench.core.store import load_results
    from editbench.harness.cli.group import main

    path = write_edits(tmp_path / "mine.jsonl", 4)
    (tmp_path / "sst2.jsonl").write_text(
        "\n".join(json.dumps({"sentence": f"s{i}", "label": i % 2}) for i in range(10))
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "run", "--task", str(path), "--model", str(micro_gpt2), "--methods", "ft-m,ft-l",
        "--batch-size", "4", "--gen-eval", "off", "--out", str(out), "--device", "cpu",
        "--capability", "sst2", "--capability-data", str(tmp_path), "--capability-limit", "6",
    ])
    assert result.exit_code == 0, result.output
    assert MARKS_NOTE in " ".join(result.output.split())  # wrapped to the table's width
    capability = result.output[result.output.index("general capability"):]
    assert "the unedited model: sst2 0." in capability and "sst2" in capability.splitlines()[1]
    # a Wilson interval per method
    assert capability.count("(0.") >= 2 or capability.count("(1.") >= 2
    with load_results(out) as store:
        run_id = store.runs()["run_id"].iloc[0]
    board = run_board(out, run_id)
    # the run's table: each method at its last checkpoint, with its interval where it fits
    frame = final_frame(board, ["efficacy_acc"])
    assert list(frame["method"]) == ["ft-l", "ft-m"]
    for cell in frame["efficacy"]:
        assert "(" in cell and "–" in cell
        assert cell in result.output or cell.split(" (")[0].replace(" ≈", "≈") in result.output
    assert "retention" in result.output and "collapse" in result.output
    marks = {r.cells["efficacy_acc"].mark for r in board.rows}
    assert marks in ({"best", ""}, {"tie"}, {""})
