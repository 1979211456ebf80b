"""Retention at the final checkpoint: the score of an edit by the position at which it was made.

A flat curve means early edits survive the later ones; a curve that rises to the right means the
method forgets. Positions are cut into equal slices of the stream (deciles by default) and each
slice gets its mean with a bootstrap interval over the edits in it.

The frame is built from numpy arrays grouped once (a pandas group per slice made the report spend
a quarter of its time here); each slice still draws from its own generator (``cell_rng``), so the
numbers are those of a slice-by-slice loop.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .stats import bootstrap_seeds, cell_rng

if TYPE_CHECKING:
    from .collect import Results
    from .leaderboard import Board

COLUMNS = ["label", "metric", "n_edits", "bin", "position", "mean", "low", "high", "n"]


def retention_frame(results: Results, board: Board, bins: int = 10, seed: int = 0,
                    metrics: Collection[str] | None = None) -> pd.DataFrame:
    """One row per (method, metric, slice) at each method's last checkpoint; ``position`` is the
    slice's middle edit (0 = the first edit made). Seeds of a sweep are pooled slice by slice.
    ``metrics``: only these (default: every stored one)."""
    scores = results.scores
    if metrics is not None:
        scores = scores[scores["metric"].isin(list(metrics))]
    final = board.final_rows()
    wanted = {(r.method, r.n_edits) for r in final}
    # one pass over the store's scores: the rows of every final checkpoint, grouped once
    at_final = scores[pd.Series(list(zip(scores["method"], scores["n_edits"])),
                                index=scores.index).isin(wanted)] if len(scores) else scores
    groups = {key: frame for key, frame in at_final.groupby(["method", "n_edits"], sort=False)}
    records = []
    for row in final:
        n_edits, slices = row.n_edits, min(bins, row.n_edits)
        chosen = groups.get((row.method, n_edits))
        if chosen is None:
            continue
        chosen = chosen[chosen["run_id"].isin(row.run_ids)]
        metric = chosen["metric"].to_numpy()
        run = chosen["run_id"].to_numpy()
        value = chosen["value"].to_numpy(dtype=float)
        slice_of = (chosen["position"].to_numpy() * slices // n_edits).astype(int)
        order = np.lexsort((run, slice_of, metric))
        metric, run, value, slice_of = metric[order], run[order], value[order], slice_of[order]
        change = np.flatnonzero((metric[1:] != metric[:-1]) | (slice_of[1:] != slice_of[:-1])) + 1
        runs_key = ",".join(row.run_ids)
        for start, stop in zip(np.r_[0, change], np.r_[change, len(metric)]):
            if start == stop:
                continue
            name, slice_ = str(metric[start]), int(slice_of[start])
            cuts = np.flatnonzero(run[start + 1:stop] != run[start:stop - 1]) + 1
            per_run = np.split(value[start:stop], cuts)
            iv = bootstrap_seeds(per_run, cell_rng(seed, runs_key, row.method, n_edits, name,
                                                   np.int64(slice_)))
            records.append({"label": row.label, "metric": name, "n_edits": n_edits,
                            "bin": slice_, "position": (slice_ + 0.5) * n_edits / slices,
                            "mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n})
    return pd.DataFrame.from_records(records, columns=COLUMNS)
