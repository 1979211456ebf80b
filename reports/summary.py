"""The end-of-run summary tables: method x checkpoint, read back from the store, each cell with the
leaderboard's interval and marks."""

from __future__ import annotations

import pandas as pd

from ..core.store import ResultsStore

COLUMNS = {
    "efficacy_acc": "efficacy",
    "generalization_acc": "general.",
    "specificity_agree": "specif.",
    "specificity_acc": "specif.(ans)",
    "efficacy_gen_em": "eff.(gen)",
    "generalization_gen_em": "gen.(gen)",
    "specificity_gen_agree": "spec.(gen)",
    "seconds_per_edit": "s/edit",
    "peak_memory_bytes": "peak MiB",
}


def unedited_capability(store: ResultsStore, run_id: str) -> dict[str, float]:
    """General-capability accuracy of the model before any edit, per question set."""
    frame = store.capability()
    frame = frame[(frame["run_id"] == run_id) & (frame["method"] == "")]
    return dict(zip(frame["name"], frame["accuracy"]))


def format_table(frame: pd.DataFrame) -> str:
    """A plain, aligned text table (no dependency on a terminal library)."""
    if frame.empty:
        return "(no checkpoints stored)"
    cells = [[str(c) for c in frame.columns]]
    for row in frame.itertuples(index=False):
        cells.append([f"{v:.3f}" if isinstance(v, float) and abs(v) < 100 else
                      f"{v:.0f}" if isinstance(v, float) else str(v) for v in row])
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths)))
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- the run's terminal table with intervals and marks, from the leaderboard's own cells ----------
#: how to read the marks and intervals of :func:`board_frame`
MARKS_NOTE = ("★ best at that edit count, ≈ tied with the best (95% intervals overlap); "
              "(low–high): the 95% interval, as in `editbench report` (docs/reports.md)")


def only_run(results, run_id: str):
    """``results`` (a :class:`~editbench.reports.collect.Results`) cut down to one run."""
    from dataclasses import fields, replace

    return replace(results, **{
        f.name: getattr(results, f.name)[getattr(results, f.name)["run_id"] == run_id]
        for f in fields(results) if f.name != "sources"})


def run_board(folder, run_id: str, seed: int = 0):
    """The leaderboard board of one run in a results folder: each method's cells with their
    intervals, and best and tie marks between its methods at each checkpoint."""
    from .collect import collect
    from .derived import derive
    from .leaderboard import build_board

    run = only_run(collect([folder]), run_id)
    return build_board(derive(run), run.runs["task"].iloc[0], seed)


def board_frame(board, keys: list[str] | None = None) -> pd.DataFrame:
    """Method x checkpoint as text cells (mean, mark, interval) for :func:`format_table`: the
    columns ``keys`` (default: the core metrics, time and memory), headed by their short names."""
    from .metrics import CAPABILITY_PREFIX
    from .tables import plain_cell

    wanted = list(COLUMNS) if keys is None else keys
    columns = [c for c in board.columns if c.key in wanted]
    # a checkpoint with none of these values (capability sets are asked at some checkpoints only)
    # is left out
    rows = sorted((r for r in board.rows
                   if any(r.cells[c.key].interval is not None for c in columns)),
                  key=lambda r: (r.label, r.n_edits))
    if not rows:
        return pd.DataFrame()
    headers = [COLUMNS.get(c.key, c.key.removeprefix(CAPABILITY_PREFIX)) for c in columns]
    return pd.DataFrame([[r.label, r.n_edits,
                          *(plain_cell(r.cells[c.key], c.key) for c in columns)] for r in rows],
                        columns=["method", "edits", *headers])
