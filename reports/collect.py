"""Many result stores and submissions read as one: the frames of every store, concatenated.

Reports only read stores (through ``load_results``, read-only, so a store in a read-only folder
can be reported); nothing here writes. A submission (``reports/submission.py``: one run as a
JSON file, or a folder of them such as ``leaderboard/submissions``) is validated, then read into
the same frames, so everything downstream treats both alike. A run found twice (a copied store,
a run both stored and submitted) is kept once, from the first place named, so its edits are not
counted twice in an interval. A store that is damaged or not a store at all is a
:class:`~editbench.core.store.StoreError` naming its file; an invalid submission a
:class:`~editbench.reports.submission.SubmissionError` naming its file and field.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..core.store import DB_NAME, StoreError, describe_sqlite_error, load_results
from .submission import is_submission, load, submission_files, submission_frames

log = logging.getLogger(__name__)

FRAMES = ("runs", "cells", "checkpoints", "scores", "timings", "capability", "metrics",
          "edit_batches", "sessions")


@dataclass(frozen=True)
class Results:
    """The union of several stores; ``runs`` carries the ``source`` folder (or submission file) of
    each run and its ``submission`` record (file, hashes, code identity; None for a store's run).
    ``capability`` holds general-capability accuracy (method '' at 0 edits: unedited), ``metrics``
    each run's metric catalogue, ``edit_batches`` its batches as run and ``sessions`` the numerics
    (kernels, threads) each method started or resumed under."""

    runs: pd.DataFrame
    cells: pd.DataFrame
    checkpoints: pd.DataFrame
    scores: pd.DataFrame
    timings: pd.DataFrame
    capability: pd.DataFrame
    metrics: pd.DataFrame
    edit_batches: pd.DataFrame
    sessions: pd.DataFrame
    sources: tuple[Path, ...]

    @property
    def tasks(self) -> list[str]:
        return sorted(self.runs["task"].unique()) if not self.runs.empty else []


def _store_frames(folder: Path) -> dict[str, pd.DataFrame]:
    store = load_results(folder)
    try:
        frames = {name: getattr(store, name)() for name in FRAMES}
    except sqlite3.DatabaseError as exc:
        # a truncated store opens, then fails on the pages it lacks
        raise StoreError(describe_sqlite_error(store.path, exc, reading=True)) from None
    finally:
        store.close()
    frames["runs"] = frames["runs"].assign(submission=None)
    return frames


def _read(path: Path) -> list[tuple[Path, dict[str, pd.DataFrame]]]:
    """(source, frames) of a store folder, a submission file, or a folder of submissions."""
    if is_submission(path):
        return [(path, submission_frames(load(path), path))]
    if path.is_dir() and not (path / DB_NAME).exists():
        found = submission_files(path)
        if not found:
            raise FileNotFoundError(f"{path} holds no editbench results: neither a store "
                                    f"({DB_NAME}) nor submissions (*.json, *.json.gz)")
        return [(f, submission_frames(load(f), f)) for f in found]
    return [(path, _store_frames(path))]


def collect(folders: Sequence[Path | str]) -> Results:
    """Read every folder's store (or submissions); raise FileNotFoundError naming a folder that
    holds neither."""
    if not folders:
        raise ValueError("name at least one results folder")
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in FRAMES}
    seen: dict[str, Path] = {}
    for source, frames in (item for folder in map(Path, folders) for item in _read(folder)):
        dupes = set(frames["runs"]["run_id"]) & set(seen)
        for run_id in sorted(dupes):
            log.warning("run %s is in both %s and %s; reading it from %s only", run_id,
                        seen[run_id], source, seen[run_id])
        frames["runs"] = frames["runs"].assign(source=str(source))
        for name, frame in frames.items():
            parts[name].append(frame[~frame["run_id"].isin(dupes)] if dupes else frame)
        seen.update({r: source for r in frames["runs"]["run_id"] if r not in seen})
    combined = {name: pd.concat(frames, ignore_index=True) for name, frames in parts.items()}
    return Results(**combined, sources=tuple(map(Path, folders)))
