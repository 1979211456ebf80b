"""The end-of-run summary table: method x checkpoint, read back from the store."""

from __future__ import annotations

import pandas as pd

from ..harness.store import ResultsStore

COLUMNS = {
    "efficacy_acc": "efficacy",
    "generalization_acc": "general.",
    "specificity_agree": "specif.",
    "specificity_acc": "specif.(ans)",
    "seconds_per_edit": "s/edit",
    "peak_memory_bytes": "peak MiB",
}


def summary_frame(store: ResultsStore, run_id: str) -> pd.DataFrame:
    frame = store.summary()
    if frame.empty:
        return frame
    frame = frame[frame["run_id"] == run_id]
    keep = ["method", "n_edits"] + [c for c in COLUMNS if c in frame.columns]
    frame = frame[keep].copy()
    frame["peak_memory_bytes"] = frame["peak_memory_bytes"] / 2**20
    return frame.rename(columns={"n_edits": "edits", **COLUMNS})


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
