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


# -- the terminal table that fits: the final checkpoint in full, the earlier ones folded ----------
#: the width the terminal table fits by default (a wider terminal may show more)
WIDTH = 100
#: the generated family's three metrics (efficacy, generalization, locality)
GENERATED = ("efficacy_gen_em", "generalization_gen_em", "specificity_gen_agree")
#: what the folded columns mean, printed under the table
FOLDED_NOTE = ("retention = final ÷ first efficacy (generated where scored); collapse = the "
               "first checkpoint where efficacy falls below half its first value or specificity "
               "below 0.5 (- none)")


def headline_keys(protocol) -> list[str]:
    """The protocol's headline metrics (efficacy, generalization, locality by its reference) and
    then the other family's: teacher-forced and generated, the headline family first."""
    teacher = ("efficacy_acc", "generalization_acc",
               "specificity_agree" if protocol.locality == "agree" else "specificity_acc")
    lead = list(protocol.headline_metrics())
    return lead + [k for k in (*teacher, *GENERATED) if k not in lead]


def column_keys(board, names: list[str]) -> list[str]:
    """``--columns`` values (a metric key such as ``efficacy_acc``, or a header such as
    ``eff.(gen)``) as the board's keys; an unknown one is an error naming what there is."""
    from .metrics import CAPABILITY_PREFIX

    by_name = {}
    for column in board.columns:
        for name in (column.key, COLUMNS.get(column.key),
                     column.key.removeprefix(CAPABILITY_PREFIX)):
            if name:
                by_name.setdefault(name.lower(), column.key)
    unknown = [n for n in names if n.lower() not in by_name]
    if unknown:
        raise ValueError(f"--columns {unknown[0]}: no such column in the {board.task} table; it "
                         f"has {', '.join(c.key for c in board.columns)}")
    return list(dict.fromkeys(by_name[n.lower()] for n in names))


def _folded(board, label: str, rows) -> tuple[str, str]:
    """The earlier checkpoints of one method as two cells: retention and collapse point
    (:data:`FOLDED_NOTE`; the collapse rule is the report's, ``lifelong.collapse_point``)."""
    from .lifelong import EFFICACY, SPECIFICITY, collapse_point

    keys = {c.key for c in board.columns}
    efficacy = next((k for k in EFFICACY if k in keys), None)
    specificity = next((k for k in SPECIFICITY if k in keys), None)
    means = [r.cells[efficacy].interval.mean for r in rows
             if efficacy and r.cells[efficacy].interval is not None]
    retention = (f"{means[-1] / means[0]:.2f}" if len(means) > 1 and means[0] > 0
                 else "-")
    at, _ = collapse_point(rows, efficacy, specificity)
    return retention, "-" if at is None else str(at)


def _cell(cell, key: str, intervals: bool) -> str:
    from .tables import plain_cell

    text = plain_cell(cell, key, best="{}★")
    if intervals:
        return text
    text = text.split(" (")[0].replace(" ≈", "≈")
    # a blank where another row has its mark, so that the decimal points line up
    return text if text.endswith(("★", "≈", "–")) else text + " "


def final_frame(board, keys: list[str], intervals: bool = True,
                folded: bool = True) -> pd.DataFrame:
    """One row per method at its last checkpoint: ``keys`` as cells (with their intervals or
    only mean and mark), then the earlier checkpoints folded into retention and collapse."""
    from .metrics import CAPABILITY_PREFIX

    columns = [c for c in board.columns if c.key in keys]
    columns.sort(key=lambda c: keys.index(c.key))
    rows = []
    for label in sorted(board.labels()):
        mine = sorted((r for r in board.rows if r.label == label
                       and any(r.cells[c.key].interval is not None for c in columns)),
                      key=lambda r: r.n_edits)
        if not mine:
            continue
        last = mine[-1]
        row = [label, last.n_edits, *(_cell(last.cells[c.key], c.key, intervals)
                                      for c in columns)]
        if folded:
            row += list(_folded(board, label, mine))
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    headers = [COLUMNS.get(c.key, c.key.removeprefix(CAPABILITY_PREFIX)) for c in columns]
    return pd.DataFrame(rows, columns=["method", "edits", *headers,
                                       *(["retention", "collapse"] if folded else [])])


def _width(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


def terminal_table(board, keys: list[str] | None = None, everything: bool = False,
                   width: int = WIDTH, folded: bool = True, keep: bool = False) -> str:
    """The table a terminal shows for ``board``, within ``width`` characters.

    By default: each method at its final checkpoint with the protocol's headline columns
    (:func:`headline_keys`), earlier checkpoints folded into retention and collapse point
    (:data:`FOLDED_NOTE`). The richest layout that fits is chosen: cells with their 95% intervals,
    else mean and mark only, else the last columns are left out and a line says which (``keep``:
    never, for the columns a user named with ``--columns``). ``everything`` (``--all``): every
    checkpoint and every column, as wide as it takes. ``folded=False``: no retention or collapse
    columns (the task's own and capability metrics)."""
    if everything:
        return format_table(board_frame(board, [c.key for c in board.columns]))
    keys = [k for k in (keys if keys is not None else headline_keys(board.protocol))
            if k in {c.key for c in board.columns}]
    if not keys:
        return "(no checkpoints stored)"
    counts = board.edit_counts
    notes = [f"each method at its last checkpoint (of {', '.join(map(str, counts))})"]
    if folded and len(counts) > 1:
        notes.append(FOLDED_NOTE)
    for intervals in (True, False):
        text = format_table(final_frame(board, keys, intervals, folded))
        if _width(text) <= width:
            break
    if not intervals:
        notes.append("95% intervals: --all, or a wider terminal")
    dropped: list[str] = []
    while not keep and _width(text) > width and len(keys) > 1:
        dropped.insert(0, keys.pop())
        text = format_table(final_frame(board, keys, False, folded))
    if dropped:
        notes.append(f"left out to fit {width} columns: {', '.join(dropped)} (--columns or --all "
                     "show them)")
    return text + "\n" + _wrap("; ".join(notes), width)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def terminal_width() -> int:
    """The width terminal tables fit: the terminal's, at least :data:`WIDTH` (a pipe or an
    unknown terminal gets that)."""
    import shutil

    return max(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns)


class TableChoice:
    """What ``--columns`` and ``--all`` ask of the terminal tables (``editbench run`` and
    ``editbench report`` share it), and the width they fit."""

    def __init__(self, columns: str | None = None, everything: bool = False,
                 width: int = WIDTH) -> None:
        self.names = [n.strip() for n in columns.split(",") if n.strip()] if columns else None
        self.everything = everything
        self.width = width

    def render(self, board) -> str:
        """The board's table; a ``--columns`` name it has no column for is a ``ValueError``."""
        keys = column_keys(board, self.names) if self.names else None
        return terminal_table(board, keys, self.everything, self.width, keep=keys is not None)

    def note(self, text: str) -> str:
        """A note under a table, wrapped to the table's width."""
        return _wrap(text, self.width)
