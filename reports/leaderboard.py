"""The leaderboard: for each task and protocol, methods x edit counts, every cell a mean with its
95% interval.

A board holds the runs of one task under one protocol (``core/protocol.py``): a number obtained in
turns of 100 is never ranked against one obtained one edit at a time, nor a teacher-forced score
against a generated one. Winners are picked within an edit count (efficacy after 10 edits is not
comparable to efficacy after 1000), per column, and a winner whose interval overlaps a rival's is
shown as a tie. Runs that differ only by seed (a sweep) are pooled: one row per method, its
interval resampling edits within each seed. This module computes; the HTML, Markdown, LaTeX, CSV
and JSON writers only present what it returns.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.protocol import Protocol, from_record
from .collect import Results
from .derived import derive
from .lifelong import EFFICACY, Lifelong, lifelong_summaries
from .metrics import (
    CAPABILITY_PREFIX,
    COST_COLUMNS,
    Column,
    capability_columns,
    cost_columns,
    metric_catalogue,
    metric_columns,
)
from .retention import retention_frame
from .stats import Interval, bootstrap_many, bootstrap_ratio, cell_rng, rank_marks, wilson

COST_KEYS = frozenset(COST_COLUMNS)


@dataclass(frozen=True)
class Cell:
    interval: Interval | None
    mark: str = ""  # "best" | "tie" | ""


@dataclass(frozen=True)
class Row:
    run_id: str  # the first of ``run_ids``, for a link
    method: str
    label: str  # the method, with what tells it apart where one board holds it under two setups
    n_edits: int
    status: str  # the worst final status over its runs: failed > diverged > running > done
    cells: dict[str, Cell]
    run_ids: tuple[str, ...] = ()  # the runs (one per seed) pooled into this row
    seeds: tuple[int, ...] = ()


@dataclass(frozen=True)
class Note:
    """Something a reader must know about a method of the board (divergence, failure)."""

    run_id: str
    label: str
    status: str
    text: str


@dataclass(frozen=True)
class Published:
    """A number the protocol's paper reports for a row's model, task and method, beside the
    measured one."""

    label: str
    n_edits: int
    metric: str
    value: float
    measured: float | None
    source: str


@dataclass(frozen=True)
class Board:
    task: str
    columns: list[Column]
    rows: list[Row]
    run_ids: list[str]
    models: list[str]
    edit_counts: list[int]
    notes: list[Note] = field(default_factory=list)
    # collapse point and retention AUC per label
    lifelong: list[Lifelong] = field(default_factory=list)
    #: the protocol every run of the board ran under (a board never mixes two)
    protocol: Protocol = field(default_factory=lambda: from_record(None))
    published: list[Published] = field(default_factory=list)
    #: the retention frame (``retention.retention_frame``), computed once by :func:`build_boards`
    #: for the lifelong summary and the retention plot alike
    retention: pd.DataFrame | None = field(default=None, compare=False, repr=False)

    @property
    def title(self) -> str:
        """``zsre · ultraedit``: the task and the protocol's label."""
        return f"{self.task} · {self.protocol.label}"

    @property
    def name(self) -> str:
        """A name for files and anchors: the task, with the protocol where it is not the default
        card unchanged."""
        default = self.protocol.name == "editbench" and not self.protocol.modified
        return self.task if default else f"{self.task}-{self.protocol.label}"

    @property
    def final_edits(self) -> int:
        return max(self.edit_counts) if self.edit_counts else 0

    def labels(self) -> list[str]:
        return list(dict.fromkeys(r.label for r in self.rows))

    def retention_metrics(self) -> list[str]:
        """The metrics the lifelong summary has a retention AUC for, generated first."""
        return [m for m in EFFICACY if any(m in s.auc for s in self.lifelong)]

    def headline_keys(self) -> list[str]:
        """The columns a reader sees first (the page's default view): the protocol's headline
        metrics, the same three scored the other way (generated beside teacher-forced, the mirage
        in plain sight), then time and memory; only those the board has (a board with none of
        the headline metrics leads with its first three)."""
        keys = list(self.protocol.headline_metrics())
        if self.protocol.generation != "off":
            other = "teacher-forced" if self.protocol.headline == "generated" else "generated"
            keys += replace(self.protocol, headline=other).headline_metrics()
        present = {c.key for c in self.columns}
        keys = [k for k in keys if k in present]
        if not keys:  # a task whose metrics have other names: its first three lead
            keys = [c.key for c in self.columns if not c.is_cost][:3]
        return list(dict.fromkeys([*keys, *(c.key for c in self.columns if c.is_cost)]))

    def retention_keys(self) -> list[str]:
        """The metrics of the retention frame and plot: the headline's quality columns (what a
        reader compares first) and the efficacies the lifelong summary's AUC reads."""
        quality = [k for k in self.headline_keys() if k not in COST_KEYS]
        present = {c.key for c in self.columns}
        return list(dict.fromkeys([*quality, *(m for m in EFFICACY if m in present)]))

    def final_rows(self) -> list[Row]:
        """Each label's row at its last checkpoint (a diverged method stops early)."""
        last: dict[str, Row] = {}
        for row in self.rows:
            if row.label not in last or row.n_edits > last[row.label].n_edits:
                last[row.label] = row
        return list(last.values())

    def winners(self, n_edits: int) -> dict[str, tuple[str, list[str]]]:
        """Per column at ``n_edits``: ("best", [label]) or ("tie", [labels]); absent if unranked."""
        found: dict[str, tuple[str, list[str]]] = {}
        for column in self.columns:
            marked = [(r.cells[column.key].mark, r.label) for r in self.rows
                      if r.n_edits == n_edits and r.cells[column.key].mark]
            if marked:
                found[column.key] = (marked[0][0], [label for _, label in marked])
        return found


def short_model(model: str) -> str:
    """A local path is shown by its last folder; a hub name (org/name) stays whole."""
    if model.startswith(("/", ".", "~")) or "\\" in model:
        return Path(model).name or model
    return model


def setup_key(model: str, config: dict[str, Any]) -> str:
    """What a run measured, apart from its seed: runs that share it are one experiment repeated
    (a seed sweep) and are pooled into one row per method."""
    kept = {k: v for k, v in (config or {}).items() if k not in ("seed", "methods")}
    text = json.dumps({"model": model, **kept}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class _Entry:
    method: str
    setup: str
    config_hash: str
    model: str
    run_ids: tuple[str, ...]
    seeds: tuple[int, ...]


def _entries(runs: pd.DataFrame, cells: pd.DataFrame,
             checkpoints: pd.DataFrame) -> dict[tuple[str, str], _Entry]:
    """(run_id, method) -> the entry (row identity) it is pooled into."""
    info = {r.run_id: r for r in runs.itertuples(index=False)}
    hashes = dict(zip(zip(cells["run_id"], cells["method"]), cells["config_hash"]))
    pairs = list(dict.fromkeys([*zip(cells["run_id"], cells["method"]),
                                *zip(checkpoints["run_id"], checkpoints["method"])]))
    by_key: dict[tuple[str, str, str], dict[int, str]] = defaultdict(dict)
    for run_id, method in sorted(pairs, key=lambda p: info[p[0]].created):
        run = info[run_id]
        key = (setup_key(run.model, run.config), method, hashes.get((run_id, method), ""))
        by_key[key][int(run.seed)] = run_id  # one run per seed: the latest
    found = {}
    for (setup, method, config_hash), per_seed in by_key.items():
        seeds = tuple(sorted(per_seed))
        entry = _Entry(method, setup, config_hash, info[per_seed[seeds[0]]].model,
                       tuple(per_seed[s] for s in seeds), seeds)
        for run_id in entry.run_ids:
            found[(run_id, method)] = entry
    return found


def _labels(entries: list[_Entry]) -> dict[_Entry, str]:
    """The method name, plus what tells two entries of one method apart: model, settings or
    setup."""
    by_method: dict[str, list[_Entry]] = defaultdict(list)
    for entry in dict.fromkeys(entries):
        by_method[entry.method].append(entry)
    labels = {}
    for method, group in by_method.items():
        if len(group) == 1:
            labels[group[0]] = method
            continue
        for describe in (lambda e: short_model(e.model), lambda e: f"settings {e.config_hash[:6]}",
                         lambda e: f"setup {e.setup[:6]}", lambda e: f"run {e.run_ids[0][:8]}"):
            names = [describe(e) for e in group]
            if len(set(names)) == len(names):
                break
        labels.update({e: f"{method} ({name})" for e, name in zip(group, names)})
    return labels


def _batch_sizes(edit_batches: pd.DataFrame) -> dict[str, list[int]]:
    """Each run's edit batch sizes as the runner stored them (a store made before they were stored
    has none; its time intervals are then left out)."""
    return {run_id: (group.sort_values("step")["stop"]
                     - group.sort_values("step")["start"]).astype(int).tolist()
            for run_id, group in edit_batches.groupby("run_id")}


def _time_interval(parts: list[tuple[float, int, np.ndarray, list[int] | None]],
                   rng: np.random.Generator) -> Interval:
    """Seconds per edit pooled over runs, each part being (stored edit seconds, edits, per-batch
    seconds, batch sizes); the interval resamples batches, where every run's batches add up."""
    total_seconds, total_edits = sum(p[0] for p in parts), sum(p[1] for p in parts)
    point = Interval(total_seconds / total_edits, None, None, 1)
    seconds, sizes = [], []
    for edit_seconds, n_edits, batch_seconds, planned in parts:
        if planned is None:
            return point
        ends = np.cumsum(planned)
        k = int(np.searchsorted(ends, n_edits, side="right"))
        if k == 0 or ends[k - 1] != n_edits or len(batch_seconds) < k:
            return point
        if not math.isclose(float(batch_seconds[:k].sum()), edit_seconds, rel_tol=1e-6,
                            abs_tol=1e-9):
            # timings that do not add up to the stored total: show the total, no interval
            return point
        seconds.extend(batch_seconds[:k])
        sizes.extend(planned[:k])
    found = bootstrap_ratio(seconds, sizes, rng)
    return Interval(point.mean, found.low, found.high, found.n)


_STATUS_ORDER = ("done", "running", "diverged", "failed")


def _worst(statuses: list[str]) -> str:
    return max(statuses, key=lambda s: _STATUS_ORDER.index(s) if s in _STATUS_ORDER else 0,
               default="done")


def run_protocol(config: dict[str, Any] | None) -> Protocol:
    """The protocol a stored run ran under (a run stored before protocols: editbench's, at its
    turn size)."""
    config = config or {}
    return from_record(config.get("protocol"), config.get("batch_size"))


def protocols_of(runs: pd.DataFrame) -> dict[str, Protocol]:
    """The protocols of ``runs``, by board key, in the order runs were created."""
    found: dict[str, Protocol] = {}
    for config in runs.sort_values("created")["config"] if len(runs) else []:
        protocol = run_protocol(config)
        found.setdefault(protocol.board_key(), protocol)
    return found


def build_board(results: Results, task: str, seed: int = 0,
                protocol: Protocol | None = None) -> Board:
    """The board of ``task``'s runs under ``protocol`` (default: its runs' only protocol, or the
    first one run; :func:`build_boards` makes one board per protocol)."""
    runs = results.runs[results.runs["task"] == task]
    if protocol is None:
        found = protocols_of(runs)
        protocol = next(iter(found.values())) if found else from_record(None)
    key = protocol.board_key()
    runs = runs[[run_protocol(c).board_key() == key for c in runs["config"]]]
    run_ids = list(runs["run_id"])
    checkpoints = results.checkpoints[results.checkpoints["run_id"].isin(run_ids)]
    scores = results.scores[results.scores["run_id"].isin(run_ids)]
    cells = results.cells[results.cells["run_id"].isin(run_ids)]
    timings = results.timings[results.timings["run_id"].isin(run_ids)]
    capability = results.capability[results.capability["run_id"].isin(run_ids)]
    edited = capability[capability["method"] != ""]
    unedited = capability[capability["method"] == ""]
    reference = dict(zip(unedited["name"], unedited["accuracy"])) if len(run_ids) == 1 else {}
    catalogue = metric_catalogue(results.metrics, run_ids)
    headline = protocol.headline_metrics()  # the protocol's headline columns lead
    columns = (sorted(metric_columns(scores["metric"].unique(), catalogue),
                      key=lambda c: headline.index(c.key) if c.key in headline else len(headline))
               + capability_columns(edited["name"].unique(), reference)
               + cost_columns(on_cpu=bool(runs["device"].astype(str).str.startswith("cpu").any())))
    asked = {(r, m, int(n), name): (int(k), float(a)) for r, m, n, name, k, a in
             zip(edited["run_id"], edited["method"], edited["n_edits"], edited["name"],
                 edited["n"], edited["accuracy"])}
    batch_sizes = _batch_sizes(results.edit_batches[results.edit_batches["run_id"].isin(run_ids)])

    entries = _entries(runs, cells, checkpoints)
    labels = _labels(list(entries.values()))
    status = {(r, m): s for r, m, s in zip(cells["run_id"], cells["method"], cells["status"])}
    stored = {(cp.run_id, cp.method, int(cp.n_edits)): cp
              for cp in checkpoints.itertuples(index=False)}
    values = {key: group.to_numpy() for key, group in
              scores.groupby(["run_id", "method", "n_edits", "metric"])["value"]}
    edit_times = {key: group.sort_values("step")["seconds"].to_numpy() for key, group in
                  timings[timings["phase"] == "edit"].groupby(["run_id", "method"])}

    points = sorted({(entry, n) for (r, m, n) in stored for entry in [entries[(r, m)]]},
                    key=lambda p: (p[1], labels[p[0]]))
    rows: list[Row] = []
    intervals: list[dict[str, Interval | None]] = []
    resamples: list[tuple[dict[str, Interval | None], str, list, np.random.Generator]] = []
    for entry, n_edits in points:
        present = [r for r in entry.run_ids if (r, entry.method, n_edits) in stored]
        cps = [stored[(r, entry.method, n_edits)] for r in present]
        found: dict[str, Interval | None] = {}
        for column in columns:
            rng = cell_rng(seed, ",".join(present), entry.method, n_edits, column.key)
            if column.key == "seconds_per_edit":
                found[column.key] = _time_interval(
                    [(cp.edit_seconds, n_edits,
                      edit_times.get((cp.run_id, entry.method), np.array([])),
                      batch_sizes.get(cp.run_id)) for cp in cps], rng)
            elif column.key == "peak_memory_bytes":
                found[column.key] = Interval(float(max(cp.peak_memory_bytes for cp in cps)),
                                             None, None, 1)
            elif column.key.startswith(CAPABILITY_PREFIX):
                name = column.key[len(CAPABILITY_PREFIX):]
                answered = [asked[k] for r in present
                            if (k := (r, entry.method, n_edits, name)) in asked]
                n = sum(k for k, _ in answered)
                found[column.key] = wilson(sum(k * a for k, a in answered) / n, n) if n else None
            else:
                groups = [values[k] for r in present
                          if (k := (r, entry.method, n_edits, column.key)) in values]
                found[column.key] = None  # filled below, the bootstraps run together
                if any(np.isfinite(g).any() for g in groups):
                    resamples.append((found, column.key, groups, rng))
        intervals.append(found)
        rows.append(Row(present[0], entry.method, labels[entry], n_edits,
                        _worst([status.get((r, entry.method), "done") for r in entry.run_ids]), {},
                        tuple(present),
                        tuple(s for s, r in zip(entry.seeds, entry.run_ids) if r in present)))

    for (found, key, _, _), interval in zip(resamples, bootstrap_many(
            [(groups, rng) for _, _, groups, rng in resamples])):
        found[key] = interval

    marks: dict[tuple[int, str], str] = {}
    for n_edits in sorted({r.n_edits for r in rows}):
        members = [i for i, r in enumerate(rows) if r.n_edits == n_edits]
        for column in columns:
            ranked = (rank_marks([intervals[i][column.key] for i in members],
                                 column.higher_is_better)
                      if column.ranked else [""] * len(members))
            for i, mark in zip(members, ranked):
                marks[(i, column.key)] = mark
    rows = [replace(r, cells={c.key: Cell(intervals[i][c.key], marks[(i, c.key)]) for c in columns})
            for i, r in enumerate(rows)]

    notes = []
    seeds = dict(zip(runs["run_id"], runs["seed"]))
    versions = dict(zip(runs["run_id"], runs["versions"]))
    for c in cells.itertuples(index=False):
        entry = entries[(c.run_id, c.method)]
        label = labels[entry] + (f" (seed {seeds[c.run_id]})" if len(entry.run_ids) > 1 else "")
        if c.status == "diverged":
            at = "" if pd.isna(c.diverged_at) else f" at {int(c.diverged_at)} edits"
            notes.append(Note(c.run_id, label, c.status,
                              f"diverged{at}: its weights became NaN or inf, "
                              "so it has no checkpoint after that"))
        elif c.status == "failed":
            notes.append(Note(c.run_id, label, c.status,
                              f"failed: {c.error or 'no error message stored'}"))
        elif c.status == "running":
            notes.append(Note(c.run_id, label, c.status,
                              "still running, or stopped before it finished "
                              "(rerun the same command to resume)"))
        changes = (versions.get(c.run_id) or {}).get("code_changes")
        if changes:  # resumed with --allow-code-change (core/identity.py)
            notes.append(Note(c.run_id, label, "code-change",
                              f"resumed under other editbench code with --allow-code-change "
                              f"({changes}): its checkpoints were not all made by one code"))
    # a local model is shown by its folder's name; its path stays on the run's page
    return Board(task, columns, rows, run_ids, sorted({short_model(m) for m in runs["model"]}),
                 sorted({r.n_edits for r in rows}), notes, protocol=protocol,
                 published=_published(protocol, task, rows, dict(zip(runs["run_id"],
                                                                     runs["model"]))))


def _published(protocol: Protocol, task: str, rows: list[Row],
               models: dict[str, str]) -> list[Published]:
    """The card's published numbers for each row's model and method at the row's edit count,
    beside the measured mean."""
    found = []
    for row in rows:
        for number in protocol.published_for(models.get(row.run_id, ""), task, row.method):
            if number.edits != row.n_edits:
                continue
            cell = row.cells.get(number.metric)
            measured = cell.interval.mean if cell is not None and cell.interval else None
            found.append(Published(row.label, row.n_edits, number.metric, number.value, measured,
                                   number.source))
    return found


def build_boards(results: Results, seed: int = 0) -> list[Board]:
    """One board per task and protocol."""
    results = derive(results)
    boards = [build_board(results, task, seed, protocol) for task in results.tasks
              for protocol in protocols_of(results.runs[results.runs["task"] == task]).values()]
    found = []
    for board in boards:
        retention = retention_frame(results, board, seed=seed, metrics=board.retention_keys())
        found.append(replace(board, retention=retention,
                             lifelong=lifelong_summaries(results, board, seed, retention)))
    return found


def _interval_dict(cell: Cell) -> dict[str, Any] | None:
    iv = cell.interval
    if iv is None:
        return None
    return {"mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n, "mark": cell.mark or None}


def board_to_dict(board: Board) -> dict[str, Any]:
    """A plain, JSON-ready form of a board, for other tools (the site's ``leaderboard.json``)."""
    return {
        "task": board.task,
        "protocol": board.protocol.record(),
        "models": board.models,
        "runs": board.run_ids,
        "columns": [{"key": c.key, "label": c.label, "description": c.description,
                     "higher_is_better": c.higher_is_better} for c in board.columns],
        "rows": [{"run_ids": list(r.run_ids), "seeds": list(r.seeds), "method": r.method,
                  "label": r.label, "n_edits": r.n_edits, "status": r.status,
                  "cells": {k: _interval_dict(c) for k, c in r.cells.items()}}
                 for r in board.rows],
        "notes": [{"run_id": n.run_id, "label": n.label, "status": n.status, "text": n.text}
                  for n in board.notes],
        "lifelong": [{"label": s.label, "final_edits": s.final_edits, "collapse_at": s.collapse_at,
                      "collapse_reason": s.collapse_reason or None,
                      "collapse_metrics": [s.efficacy, s.specificity],
                      "retention_auc": s.auc} for s in board.lifelong],
        "published": [{"label": p.label, "n_edits": p.n_edits, "metric": p.metric,
                       "published": p.value, "measured": p.measured, "source": p.source}
                      for p in board.published],
    }


def boards_frame(boards: list[Board]) -> pd.DataFrame:
    """Every cell of every board in long form: the CSV export."""
    records = []
    for board in boards:
        for row in board.rows:
            for column in board.columns:
                cell = row.cells[column.key]
                iv = cell.interval
                records.append({"task": board.task, "protocol": board.protocol.label,
                                "run_id": ";".join(row.run_ids),
                                "method": row.label, "n_edits": row.n_edits, "status": row.status,
                                "column": column.key,
                                "mean": iv.mean if iv else None, "low": iv.low if iv else None,
                                "high": iv.high if iv else None, "n": iv.n if iv else 0,
                                "mark": cell.mark})
        for summary in board.lifelong:  # the lifelong summary: one value each, no interval
            values = {"collapse_at": summary.collapse_at,
                      **{f"retention_auc:{metric}": auc for metric, auc in summary.auc.items()}}
            for column, value in values.items():
                records.append({"task": board.task, "protocol": board.protocol.label,
                                "run_id": "", "method": summary.label,
                                "n_edits": summary.final_edits, "status": "", "column": column,
                                "mean": value, "low": None, "high": None, "n": 1, "mark": ""})
    return pd.DataFrame.from_records(records, columns=["task", "protocol", "run_id", "method",
                                                       "n_edits",
                                                       "status", "column", "mean", "low", "high",
                                                       "n", "mark"])
