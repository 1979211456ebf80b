"""Retention at the final checkpoint: the score of an edit by the position at which it was made.

A flat curve means early edits survive the later ones; a curve that rises to the right means the
method forgets. Positions are cut into equal slices of the stream (deciles by default) and each
slice gets its mean with a bootstrap interval over the edits in it.
"""

from __future__ import annotations

import pandas as pd

from .collect import Results
from .leaderboard import Board
from .stats import bootstrap_mean, cell_rng

COLUMNS = ["label", "metric", "n_edits", "bin", "position", "mean", "low", "high", "n"]


def retention_frame(results: Results, board: Board, bins: int = 10, seed: int = 0) -> pd.DataFrame:
    """One row per (method, metric, slice) at each method's last checkpoint; ``position`` is the
    slice's middle edit (0 = the first edit made)."""
    final: dict[tuple[str, str], tuple[int, str]] = {}
    for row in board.rows:
        key = (row.run_id, row.method)
        if row.n_edits >= final.get(key, (0, ""))[0]:
            final[key] = (row.n_edits, row.label)
    scores = results.scores
    records = []
    for (run_id, method), (n_edits, label) in final.items():
        chosen = scores[(scores["run_id"] == run_id) & (scores["method"] == method) & (scores["n_edits"] == n_edits)]
        slices = min(bins, n_edits)
        chosen = chosen.assign(bin=(chosen["position"] * slices // n_edits).astype(int))
        for (metric, slice_), group in chosen.groupby(["metric", "bin"]):
            iv = bootstrap_mean(group["value"].to_numpy(), cell_rng(seed, run_id, method, n_edits, metric, slice_))
            records.append({"label": label, "metric": metric, "n_edits": n_edits, "bin": int(slice_),
                            "position": (slice_ + 0.5) * n_edits / slices, "mean": iv.mean, "low": iv.low,
                            "high": iv.high, "n": iv.n})
    return pd.DataFrame.from_records(records, columns=COLUMNS)
