"""What a lifelong run shows beyond its per-checkpoint table: when a method collapses, and how
much of the stream it retains.

- **Collapse point**: the first checkpoint at which the method's efficacy on the edits made so far
  falls below half its value at its first checkpoint, or its specificity below half the unedited
  model's (agreement with the unedited model, which is 1 for the unedited model itself). Efficacy
  is the generated one (``efficacy_gen_em``) where the run stored it, else the teacher-forced one;
  specificity likewise (``specificity_gen_agree``, else ``specificity_agree``). "none up to N" when
  it never happens.
- **Retention AUC**: at the final checkpoint, the area under the curve of an edit's score against
  the position at which it was made (positions scaled to [0, 1], equal slices): the mean of the
  slice means, so 1 means every edit, early or late, still holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .retention import retention_frame

if TYPE_CHECKING:
    import pandas as pd

    from .collect import Results
    from .leaderboard import Board

EFFICACY = ("efficacy_gen_em", "efficacy_acc")
SPECIFICITY = ("specificity_gen_agree", "specificity_agree")
HALF = 0.5


@dataclass(frozen=True)
class Lifelong:
    label: str
    final_edits: int
    efficacy: str | None  # the metric the collapse point watches
    specificity: str | None
    collapse_at: int | None  # None: no collapse up to final_edits
    collapse_reason: str = ""  # "efficacy" | "specificity"
    # retention AUC per metric, at the final checkpoint
    auc: dict[str, float] = field(default_factory=dict)

    @property
    def collapse_text(self) -> str:
        if self.collapse_at is None:
            return f"none up to {self.final_edits}"
        return f"{self.collapse_at} ({self.collapse_reason})"


def _first(board: Board, names: tuple[str, ...]) -> str | None:
    keys = {c.key for c in board.columns}
    return next((n for n in names if n in keys), None)


def _mean(row, key: str | None) -> float | None:
    cell = row.cells.get(key) if key else None
    return cell.interval.mean if cell is not None and cell.interval is not None else None


def collapse_point(rows, efficacy: str | None,
                   specificity: str | None) -> tuple[int | None, str]:
    """The collapse point (module docstring) of one method's rows in edit-count order, and what
    fell ("efficacy" or "specificity"); ``(None, "")`` when nothing does. The report's page and the
    terminal table (``summary.py``) share it."""
    start = _mean(rows[0], efficacy) if rows else None
    for row in rows:
        eff, spec = _mean(row, efficacy), _mean(row, specificity)
        if start is not None and eff is not None and eff < HALF * start:
            return row.n_edits, "efficacy"
        if spec is not None and spec < HALF:
            return row.n_edits, "specificity"
    return None, ""


def lifelong_summaries(results: Results, board: Board, seed: int = 0,
                       retention: pd.DataFrame | None = None) -> list[Lifelong]:
    """``retention``: the board's retention frame where the caller has it already."""
    efficacy, specificity = _first(board, EFFICACY), _first(board, SPECIFICITY)
    if retention is None:
        retention = retention_frame(results, board, seed=seed)
    summaries = []
    for label in board.labels():
        rows = sorted((r for r in board.rows if r.label == label), key=lambda r: r.n_edits)
        collapse_at, reason = collapse_point(rows, efficacy, specificity)
        mine = retention[retention["label"] == label]
        auc = {metric: float(group["mean"].mean()) for metric, group in mine.groupby("metric")
               if metric in EFFICACY}
        summaries.append(Lifelong(label, rows[-1].n_edits, efficacy, specificity, collapse_at,
                                  reason, auc))
    return summaries
