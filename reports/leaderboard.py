"""The leaderboard: for each task, methods x edit counts, every cell a mean with its 95% interval.

Winners are picked within an edit count (efficacy after 10 edits is not comparable to efficacy
after 1000), per column, and a winner whose interval overlaps a rival's is shown as a tie. This
module computes; the HTML, Markdown, LaTeX, CSV and JSON writers only present what it returns.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..harness.plan import plan_batches
from .collect import Results
from .metrics import CAPABILITY_PREFIX, Column, capability_columns, cost_columns, metric_columns
from .stats import Interval, bootstrap_mean, bootstrap_ratio, cell_rng, rank_marks, wilson


@dataclass(frozen=True)
class Cell:
    interval: Interval | None
    mark: str = ""  # "best" | "tie" | ""


@dataclass(frozen=True)
class Row:
    run_id: str
    method: str
    label: str  # the method, with the run added where one board holds the method twice
    n_edits: int
    status: str  # the cell's final status: done | diverged | failed | running
    cells: dict[str, Cell]


@dataclass(frozen=True)
class Note:
    """Something a reader must know about a method of the board (divergence, failure)."""

    run_id: str
    label: str
    status: str
    text: str


@dataclass(frozen=True)
class Board:
    task: str
    columns: list[Column]
    rows: list[Row]
    run_ids: list[str]
    models: list[str]
    edit_counts: list[int]
    notes: list[Note] = field(default_factory=list)

    @property
    def final_edits(self) -> int:
        return max(self.edit_counts) if self.edit_counts else 0

    def labels(self) -> list[str]:
        return list(dict.fromkeys(r.label for r in self.rows))

    def winners(self, n_edits: int) -> dict[str, tuple[str, list[str]]]:
        """Per column at ``n_edits``: ("best", [label]) or ("tie", [labels]); absent if unranked."""
        found: dict[str, tuple[str, list[str]]] = {}
        for column in self.columns:
            marked = [(r.cells[column.key].mark, r.label) for r in self.rows
                      if r.n_edits == n_edits and r.cells[column.key].mark]
            if marked:
                found[column.key] = (marked[0][0], [label for _, label in marked])
        return found


def _labels(runs: pd.DataFrame, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The method name, plus the seed (or run id) only where a method appears in several runs."""
    seeds = runs.set_index("run_id")["seed"].to_dict()
    by_method: dict[str, list[str]] = defaultdict(list)
    for run_id, method in pairs:
        by_method[method].append(run_id)
    labels = {}
    for method, run_ids in by_method.items():
        distinct_seeds = len({seeds.get(r) for r in run_ids}) == len(run_ids)
        for run_id in run_ids:
            if len(run_ids) == 1:
                labels[(run_id, method)] = method
            elif distinct_seeds:
                labels[(run_id, method)] = f"{method} (seed {seeds.get(run_id)})"
            else:
                labels[(run_id, method)] = f"{method} ({run_id[:8]})"
    return labels


def _batch_sizes(config: dict[str, Any]) -> list[int] | None:
    """The run's edit batches, re-planned from its stored config by the runner's own planner."""
    try:
        batches = plan_batches(int(config["edits"]), int(config["batch_size"]), list(config["checkpoints"]))
    except (KeyError, TypeError, ValueError):
        return None
    return [end - start for start, end in batches]


def _time_interval(seconds_per_edit: float, n_edits: int, batch_seconds: np.ndarray,
                   sizes: list[int] | None, rng: np.random.Generator) -> Interval:
    point = Interval(float(seconds_per_edit), None, None, 1)
    if sizes is None:
        return point
    ends = np.cumsum(sizes)
    k = int(np.searchsorted(ends, n_edits, side="right"))
    if k == 0 or ends[k - 1] != n_edits or len(batch_seconds) < k:
        return point
    found = bootstrap_ratio(batch_seconds[:k], sizes[:k], rng)
    if not math.isclose(found.mean, seconds_per_edit, rel_tol=1e-6, abs_tol=1e-9):
        return point  # timings that do not add up to the stored total: show the total, no interval
    return Interval(float(seconds_per_edit), found.low, found.high, found.n)


def build_board(results: Results, task: str, seed: int = 0) -> Board:
    runs = results.runs[results.runs["task"] == task]
    run_ids = list(runs["run_id"])
    checkpoints = results.checkpoints[results.checkpoints["run_id"].isin(run_ids)]
    scores = results.scores[results.scores["run_id"].isin(run_ids)]
    cells = results.cells[results.cells["run_id"].isin(run_ids)]
    timings = results.timings[results.timings["run_id"].isin(run_ids)]
    capability = results.capability[results.capability["run_id"].isin(run_ids)]
    edited = capability[capability["method"] != ""]
    unedited = capability[capability["method"] == ""]
    reference = dict(zip(unedited["probe"], unedited["accuracy"])) if len(run_ids) == 1 else {}
    columns = (metric_columns(scores["metric"].unique(), task) + capability_columns(edited["probe"].unique(), reference)
               + cost_columns())
    probes = {(r, m, int(n), p): (int(k), float(a)) for r, m, n, p, k, a in
              zip(edited["run_id"], edited["method"], edited["n_edits"], edited["probe"], edited["n"], edited["accuracy"])}

    pairs = list(dict.fromkeys(zip(cells["run_id"], cells["method"])))
    pairs += [p for p in dict.fromkeys(zip(checkpoints["run_id"], checkpoints["method"])) if p not in pairs]
    labels = _labels(runs, pairs)
    status = {(r, m): s for r, m, s in zip(cells["run_id"], cells["method"], cells["status"])}
    configs = dict(zip(runs["run_id"], runs["config"]))
    values = {key: group.to_numpy() for key, group in
              scores.groupby(["run_id", "method", "n_edits", "metric"])["value"]}
    edit_times = {key: group.sort_values("step")["seconds"].to_numpy() for key, group in
                  timings[timings["phase"] == "edit"].groupby(["run_id", "method"])}

    rows: list[Row] = []
    intervals: list[dict[str, Interval | None]] = []
    for cp in checkpoints.sort_values(["n_edits", "method", "run_id"]).itertuples(index=False):
        key = (cp.run_id, cp.method)
        found: dict[str, Interval | None] = {}
        for column in columns:
            rng = cell_rng(seed, cp.run_id, cp.method, cp.n_edits, column.key)
            if column.key == "seconds_per_edit":
                found[column.key] = _time_interval(cp.seconds_per_edit, cp.n_edits, edit_times.get(key, np.array([])),
                                                   _batch_sizes(configs.get(cp.run_id) or {}), rng)
            elif column.key == "peak_memory_bytes":
                found[column.key] = Interval(float(cp.peak_memory_bytes), None, None, 1)
            elif column.key.startswith(CAPABILITY_PREFIX):
                probe = probes.get((cp.run_id, cp.method, int(cp.n_edits), column.key[len(CAPABILITY_PREFIX):]))
                found[column.key] = wilson(probe[1], probe[0]) if probe and probe[0] > 0 else None
            else:
                data = values.get((cp.run_id, cp.method, cp.n_edits, column.key))
                ok = data is not None and np.isfinite(data).any()
                found[column.key] = bootstrap_mean(data, rng) if ok else None
        intervals.append(found)
        rows.append(Row(cp.run_id, cp.method, labels[key], int(cp.n_edits), status.get(key, "done"), {}))

    marks: dict[tuple[int, str], str] = {}
    for n_edits in sorted({r.n_edits for r in rows}):
        members = [i for i, r in enumerate(rows) if r.n_edits == n_edits]
        for column in columns:
            for i, mark in zip(members, rank_marks([intervals[i][column.key] for i in members],
                                                   column.higher_is_better)):
                marks[(i, column.key)] = mark
    rows = [Row(r.run_id, r.method, r.label, r.n_edits, r.status,
                {c.key: Cell(intervals[i][c.key], marks[(i, c.key)]) for c in columns})
            for i, r in enumerate(rows)]

    notes = []
    for c in cells.itertuples(index=False):
        label = labels[(c.run_id, c.method)]
        if c.status == "diverged":
            at = "" if pd.isna(c.diverged_at) else f" at {int(c.diverged_at)} edits"
            notes.append(Note(c.run_id, label, c.status, f"diverged{at}: its weights became NaN or inf, "
                                                          "so it has no checkpoint after that"))
        elif c.status == "failed":
            notes.append(Note(c.run_id, label, c.status, f"failed: {c.error or 'no error message stored'}"))
        elif c.status == "running":
            notes.append(Note(c.run_id, label, c.status, "still running, or stopped before it finished "
                                                         "(rerun the same command to resume)"))
    return Board(task, columns, rows, run_ids, sorted(runs["model"].unique()),
                 sorted({r.n_edits for r in rows}), notes)


def build_boards(results: Results, seed: int = 0) -> list[Board]:
    return [build_board(results, task, seed) for task in results.tasks]


def _interval_dict(cell: Cell) -> dict[str, Any] | None:
    iv = cell.interval
    if iv is None:
        return None
    return {"mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n, "mark": cell.mark or None}


def board_to_dict(board: Board) -> dict[str, Any]:
    """A plain, JSON-ready form of a board, for other tools (the site's ``leaderboard.json``)."""
    return {
        "task": board.task,
        "models": board.models,
        "runs": board.run_ids,
        "columns": [{"key": c.key, "label": c.label, "description": c.description,
                     "higher_is_better": c.higher_is_better} for c in board.columns],
        "rows": [{"run_id": r.run_id, "method": r.method, "label": r.label, "n_edits": r.n_edits,
                  "status": r.status, "cells": {k: _interval_dict(c) for k, c in r.cells.items()}}
                 for r in board.rows],
        "notes": [{"run_id": n.run_id, "label": n.label, "status": n.status, "text": n.text} for n in board.notes],
    }


def boards_frame(boards: list[Board]) -> pd.DataFrame:
    """Every cell of every board in long form: the CSV export."""
    records = []
    for board in boards:
        for row in board.rows:
            for column in board.columns:
                cell = row.cells[column.key]
                iv = cell.interval
                records.append({"task": board.task, "run_id": row.run_id, "method": row.label,
                                "n_edits": row.n_edits, "status": row.status, "column": column.key,
                                "mean": iv.mean if iv else None, "low": iv.low if iv else None,
                                "high": iv.high if iv else None, "n": iv.n if iv else 0, "mark": cell.mark})
    return pd.DataFrame.from_records(records, columns=["task", "run_id", "method", "n_edits", "status", "column",
                                                       "mean", "low", "high", "n", "mark"])
