"""Retention at the final checkpoint: the score of an edit by the position at which it was made.

A flat curve means early edits survive the later ones; a curve that rises to the right means the
method forgets. Positions are cut into equal slices of the stream (deciles by default) and each
slice gets its mean with a bootstrap interval over the edits in it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from .stats import bootstrap_seeds, cell_rng

if TYPE_CHECKING:
    from .collect import Results
    from .leaderboard import Board

COLUMNS = ["label", "metric", "n_edits", "bin", "position", "mean", "low", "high", "n"]


def retention_frame(results: Results, board: Board, bins: int = 10, seed: int = 0) -> pd.DataFrame:
    """One row per (method, metric, slice) at each method's last checkpoint; ``position`` is the
    slice's middle edit (0 = the first edit made). Seeds of a sweep are pooled slice by slice."""
    scores = results.scores
    records = []
    for row in board.final_rows():
        label = row.label
        n_edits, slices = row.n_edits, min(bins, row.n_edits)
        chosen = scores[scores["run_id"].isin(row.run_ids) & (scores["method"] == row.method)
                        & (scores["n_edits"] == n_edits)]
        chosen = chosen.assign(bin=(chosen["position"] * slices // n_edits).astype(int))
        for (metric, slice_), group in chosen.groupby(["metric", "bin"]):
            per_run = [g["value"].to_numpy() for _, g in group.groupby("run_id")]
            iv = bootstrap_seeds(per_run, cell_rng(seed, ",".join(row.run_ids), row.method,
                                                   n_edits, metric, slice_))
            records.append({"label": label, "metric": metric, "n_edits": n_edits,
                            "bin": int(slice_), "position": (slice_ + 0.5) * n_edits / slices,
                            "mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n})
    return pd.DataFrame.from_records(records, columns=COLUMNS)
