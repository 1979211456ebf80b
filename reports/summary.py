"""The end-of-run summary table: method x checkpoint, read back from the store."""

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


#: Columns that the store's checkpoints table adds to every summary row (not metrics).
CHECKPOINT_FIELDS = {"run_id", "method", "n_edits", "edit_seconds", "eval_seconds", "seconds_per_edit",
                     "peak_memory_bytes", "created"}


def run_summary(store: ResultsStore, run_id: str) -> pd.DataFrame:
    """One run's per-checkpoint means, read once and shared by the tables below; metric columns that
    only other runs in the store have are dropped."""
    frame = store.summary()
    if frame.empty:
        return frame
    return frame[frame["run_id"] == run_id].dropna(axis=1, how="all")


def summary_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """Core metrics with time and memory, method x checkpoint."""
    if summary.empty:
        return summary
    keep = ["method", "n_edits"] + [c for c in COLUMNS if c in summary.columns]
    frame = summary[keep].copy()
    frame["peak_memory_bytes"] = frame["peak_memory_bytes"] / 2**20
    return frame.rename(columns={"n_edits": "edits", **COLUMNS})


def task_metrics_frame(summary: pd.DataFrame, names: list[str] | None = None) -> pd.DataFrame:
    """The task's own metric variants (CounterFact success/magnitude, fluency...), if it has any:
    ``names``, or every metric the main table does not show."""
    extra = [c for c in summary.columns if c not in COLUMNS and c not in CHECKPOINT_FIELDS
             and (names is None or c in names)]
    if not extra:
        return summary.iloc[0:0]
    return summary[["method", "n_edits", *extra]].rename(columns={"n_edits": "edits"})


def capability_frame(store: ResultsStore, run_id: str) -> pd.DataFrame:
    """General-capability accuracy per method and checkpoint, the unedited model first."""
    frame = store.capability()
    frame = frame[frame["run_id"] == run_id]
    if frame.empty:
        return frame
    frame = frame.assign(method=frame["method"].replace("", "(unedited)"))
    wide = frame.pivot_table(index=["method", "n_edits"], columns="name", values="accuracy").reset_index()
    wide.columns.name = None
    return wide.rename(columns={"n_edits": "edits"})


def format_table(frame: pd.DataFrame) -> str:
    """A plain, aligned text table (no dependency on a terminal library)."""
    if frame.empty:
        return "(no checkpoints stored)"
    cells = [[str(c) for c in frame.columns]]
    for row in frame.itertuples(index=False):
        cells.append([f"{v:.3f}" if isinstance(v, float) and abs(v) < 100 else
                      f"{v:.0f}" if isinstance(v, float) else str(v) for v in row])
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
