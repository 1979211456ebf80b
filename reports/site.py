"""Writing the pages: the report folder (``report --html``) and the static site (``publish``).

Both are the same pieces put together differently. The report is one page a researcher reads
top to bottom (every task's table and plots) plus a page per run; the site puts one table per
task on its index, gives each task its own page of plots, and adds ``leaderboard.json`` for other
tools and ``.nojekyll`` for GitHub Pages.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.numerics import describe_numerics
from .background import Background
from .collect import Results
from .derived import derive
from .leaderboard import Board, board_to_dict, build_boards, setup_key, short_model
from .metrics import Column, metric_catalogue, metric_columns
from .plots import PLOT_KINDS, Plot, board_plots, slug
from .render import render
from .samples import browser_data
from .stats import N_BOOT
from .submission import stored_identity

log = logging.getLogger(__name__)

JSON_NAME = "leaderboard.json"
JSON_SCHEMA = 1


@dataclass(frozen=True)
class MethodView:
    method: str
    status: str
    diverged_at: int | None
    error: str | None
    config: str
    config_hash: str
    last_checkpoint: int


@dataclass(frozen=True)
class RunView:
    """What a page shows of a run: its stored row, made plain for the templates."""

    run_id: str
    page: str
    task: str
    model: str
    model_short: str
    created: str
    device: str
    seed: int
    git_sha: str | None
    dataset_hash: str
    n_edits: int
    batch_size: int | None
    checkpoints: list[int]
    config: dict[str, Any]
    versions: dict[str, Any]
    baseline: dict[str, Any]
    pre_edit_accuracy: float | None
    source: str
    methods: list[MethodView] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    checkpoints_table: list[dict[str, Any]] = field(default_factory=list)
    phase_names: list[str] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)
    capability_sets: list[str] = field(default_factory=list)
    # method, n_edits, {set: (acc, n)}
    capability: list[dict[str, Any]] = field(default_factory=list)
    #: each distinct set of numerics the run's work ran under: summary, the record, who ran under it
    numerics: list[dict[str, Any]] = field(default_factory=list)
    #: the hash of the editbench source that ran it (None: a run stored before identities were)
    code_identity: str | None = None
    model_revision: str | None = None
    #: where the run came from when it is a submission: file, submitted, hashes, submitted_with
    submission: dict[str, Any] | None = None
    #: the submission file's copy on the site, relative to the run's page
    submission_href: str | None = None


@dataclass(frozen=True)
class SetupView:
    """Runs of one task that differ only by seed, shown as one line above the table."""

    model: str
    model_short: str
    n_edits: int
    batch_size: int | None
    seeds: list[int]
    devices: list[str]
    pre_edit_accuracy: float | None
    runs: list[RunView]


@dataclass(frozen=True)
class Section:
    board: Board
    slug: str
    setups: list[SetupView]
    plots: list[Plot]
    page: str | None  # the task's own page, on a site


PHASE_ORDER = ["load", "baseline", "baseline_forward", "prepare", "edit", "eval", "eval_forward"]
#: Phases measured inside another (the scoring backend's forward passes): shown, but not added to
#: the total.
SUB_PHASES = {"baseline_forward", "eval_forward"}


def _none(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else value


def run_views(results: Results) -> dict[str, RunView]:
    views = {}
    per_edit_means = (
        results.scores.groupby(["run_id", "method", "n_edits", "metric"])["value"].mean()
        if not results.scores.empty else pd.Series(dtype=float))
    for run in results.runs.itertuples(index=False):
        config = run.config or {}
        cells = results.cells[results.cells["run_id"] == run.run_id]
        checkpoints = results.checkpoints[results.checkpoints["run_id"] == run.run_id]
        timings = results.timings[results.timings["run_id"] == run.run_id]
        last = checkpoints.groupby("method")["n_edits"].max().to_dict()
        methods = [MethodView(c.method, c.status,
                              None if pd.isna(c.diverged_at) else int(c.diverged_at),
                              _none(c.error), c.method_config, c.config_hash,
                              int(last.get(c.method, 0)))
                   for c in cells.itertuples(index=False)]
        metrics = [c.key for c in metric_columns(
            results.scores.loc[results.scores["run_id"] == run.run_id, "metric"].unique(),
            metric_catalogue(results.metrics, [run.run_id]))]
        table = []
        for cp in checkpoints.itertuples(index=False):
            means = {m: float(per_edit_means[(run.run_id, cp.method, cp.n_edits, m)])
                     for m in metrics
                     if (run.run_id, cp.method, cp.n_edits, m) in per_edit_means.index}
            table.append({"method": cp.method, "n_edits": int(cp.n_edits),
                          "edit_seconds": cp.edit_seconds,
                          "eval_seconds": cp.eval_seconds, "seconds_per_edit": cp.seconds_per_edit,
                          "peak_memory_bytes": float(cp.peak_memory_bytes), "means": means})
        phase_names = sorted(timings["phase"].unique(), key=lambda p: (PHASE_ORDER + [p]).index(p))
        phases = []
        for method, group in timings.groupby("method", sort=True):
            sums = group.groupby("phase")["seconds"].agg(["sum", "count"])
            total = float(sums.loc[~sums.index.isin(SUB_PHASES), "sum"].sum())
            phases.append({"method": method, "total": total,
                           "cells": {p: (float(r["sum"]), int(r["count"]))
                                     for p, r in sums.iterrows()}})
        asked = results.capability[results.capability["run_id"] == run.run_id]
        capability = [{"method": method or "(unedited)", "n_edits": int(n_edits),
                       "cells": {n: (float(a), int(k))
                                 for n, a, k in zip(g["name"], g["accuracy"], g["n"])}}
                      for (method, n_edits), g in asked.groupby(["method", "n_edits"], sort=True)]
        baseline = run.baseline or {}
        sessions = results.sessions[results.sessions["run_id"] == run.run_id]
        submission = getattr(run, "submission", None)
        submission = submission if isinstance(submission, dict) else None
        views[run.run_id] = RunView(
            run_id=run.run_id, page=f"{slug(run.run_id)}.html", task=run.task, model=run.model,
            model_short=short_model(run.model), created=run.created, device=run.device,
            seed=int(run.seed),
            git_sha=_none(run.git_sha), dataset_hash=run.dataset_hash, n_edits=int(run.n_edits),
            batch_size=config.get("batch_size"), checkpoints=list(config.get("checkpoints") or []),
            config=config, versions=run.versions or {}, baseline=baseline,
            pre_edit_accuracy=baseline.get("pre_edit_accuracy"), source=run.source, methods=methods,
            metrics=metrics, checkpoints_table=table, phase_names=phase_names, phases=phases,
            capability_sets=sorted(asked["name"].unique()), capability=capability,
            numerics=numerics_views(sessions),
            code_identity=(stored_identity(run.versions or {}, config)
                           or (submission or {}).get("code_identity")),
            model_revision=config.get("model_revision"), submission=submission,
            submission_href=(f"../submissions/{slug(Path(submission['file']).name)}"
                             if submission else None))
    return views


def numerics_views(sessions: pd.DataFrame) -> list[dict[str, Any]]:
    """The run's sessions grouped by their numerics: one entry per distinct setting, with the
    methods ('(unedited baseline)' for the baseline) that ran under it, in the order first seen."""
    groups: dict[str, dict[str, Any]] = {}
    for method, numerics in zip(sessions["method"], sessions["numerics"]):
        key = json.dumps(numerics, sort_keys=True)
        entry = groups.setdefault(key, {"summary": describe_numerics(numerics),
                                        "numerics": numerics, "methods": []})
        name = method or "(unedited baseline)"
        if name not in entry["methods"]:
            entry["methods"].append(name)
    return list(groups.values())


def setup_views(runs: list[RunView]) -> list[SetupView]:
    groups: dict[str, list[RunView]] = {}
    for run in runs:
        groups.setdefault(setup_key(run.model, run.config), []).append(run)
    views = []
    for members in groups.values():
        members = sorted(members, key=lambda r: r.seed)
        known = [r.pre_edit_accuracy for r in members if r.pre_edit_accuracy is not None]
        first = members[0]
        views.append(SetupView(first.model, first.model_short, first.n_edits, first.batch_size,
                               [r.seed for r in members],
                               list(dict.fromkeys(r.device for r in members)),
                               sum(known) / len(known) if known else None, members))
    return views


def _columns(boards: list[Board]) -> list[Column]:
    seen: dict[str, Column] = {}
    for board in boards:
        for column in board.columns:
            seen.setdefault(column.key, column)
    return list(seen.values())


def _site_info(results: Results, seed: int, json_name: str | None) -> dict[str, Any]:
    try:
        own = version("editbench")
    except PackageNotFoundError:
        own = "(not installed)"
    latest = max(results.runs["created"]) if not results.runs.empty else None
    return {"version": own, "sources": [str(s) for s in results.sources], "latest": latest,
            "seed": seed, "n_boot": N_BOOT, "json": json_name}


def _plain(value: Any) -> Any:
    """JSON has no NaN or infinity: a stored NaN (a baseline that could not be computed) becomes
    null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def leaderboard_json(results: Results, boards: list[Board],
                     runs: dict[str, RunView]) -> dict[str, Any]:
    return {
        "schema": JSON_SCHEMA,
        "boards": [board_to_dict(b) for b in boards],
        "runs": [{"run_id": r.run_id, "task": r.task, "model": r.model, "created": r.created,
                  "device": r.device, "seed": r.seed, "git_sha": r.git_sha,
                  "dataset_hash": r.dataset_hash, "n_edits": r.n_edits,
                  "versions": r.versions, "baseline": r.baseline,
                  "numerics": [{"numerics": n["numerics"], "methods": n["methods"]}
                               for n in r.numerics],
                  "methods": {m.method: m.status for m in r.methods},
                  "code_identity": r.code_identity, "model_revision": r.model_revision,
                  "submission": ({k: r.submission[k] for k in ("submitted", "scores_sha256",
                                                                "content_sha256")}
                                 | {"file": r.submission_href.removeprefix("../")}
                                 if r.submission else None)}
                 for r in runs.values()],
    }


def _write_run_pages(out: Path, runs: dict, common: dict[str, Any]) -> list[Path]:
    """A page per run, with its answer browser and, for a submission, its file beside it."""
    written = []
    for view in runs.values():
        page = out / "runs" / view.page
        if view.submission is not None:  # its provenance, as submitted, beside its page
            (out / "submissions").mkdir(exist_ok=True)
            shutil.copyfile(view.submission["file"],
                            out / "submissions" / Path(view.submission_href).name)
        answers = None if view.submission is not None else browser_data(view.source, view.run_id)
        page.write_text(render("run.html", root="../", run=view, samples=answers, **common),
                        "utf-8")
        written.append(page)
    return written


def write_pages(results: Results, out: Path | str, *, site: bool, seed: int = 0,
                boards: list[Board] | None = None) -> list[Path]:
    """Write every page, plot and the JSON table into ``out``; return the pages written.

    ``site=False`` is the report (plots on the index); ``site=True`` the published site (a page per
    task for the plots, ``.nojekyll``). ``boards``: those of ``results`` at ``seed``, where the
    caller built them already (they are the slow part)."""
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    results = derive(results)
    if boards is None:
        boards = build_boards(results, seed=seed)
    slugs: list[str] = []
    for board in boards:
        task_slug = slug(board.name)
        while task_slug in slugs:  # two task names that differ only in characters a file name drops
            task_slug += "-"
        slugs.append(task_slug)
    # SVG only: the pages show it, and a second format would draw every figure twice. The first
    # figures are drawn in a second process while this one writes the run pages, then draws the
    # rest (background.py): about half the drawing time each, on the default run's board

    def draw(kinds: tuple[str, ...]) -> list[list[Plot]]:
        return [board_plots(results, board, out / "plots", seed=seed, name=task_slug,
                            formats=("svg",), kinds=kinds)
                for board, task_slug in zip(boards, slugs)]

    drawing = Background(lambda: draw(PLOT_KINDS[:3]))
    runs = run_views(results)
    run_pages = {run_id: view.page for run_id, view in runs.items()}
    nav = [{"href": "index.html#metrics", "text": "metrics"},
           {"href": "index.html#runs", "text": "runs"}]
    if site:
        nav = [{"href": f"tasks/{task_slug}.html", "text": board.title}
               for board, task_slug in zip(boards, slugs)] + nav
    common = {"site": _site_info(results, seed, JSON_NAME), "nav": nav, "run_pages": run_pages}
    written = _write_run_pages(out, runs, common)
    drawn_here = draw(PLOT_KINDS[3:])
    sections = [Section(board, task_slug, setup_views([runs[r] for r in board.run_ids]),
                        first + rest, f"tasks/{task_slug}.html" if site else None)
                for board, task_slug, first, rest in zip(boards, slugs, drawing.result(),
                                                          drawn_here)]
    written.insert(0, out / "index.html")
    (out / "index.html").write_text(render("index.html", root="", sections=sections,
                                           runs=list(runs.values()), columns=_columns(boards),
                                           with_plots=not site, **common), "utf-8")
    if site:
        (out / "tasks").mkdir(exist_ok=True)
        for section in sections:
            page = out / section.page
            page.write_text(render("task.html", root="../", section=section, with_plots=True,
                                   **common), "utf-8")
            written.append(page)
        (out / ".nojekyll").write_text("", "utf-8")
    (out / JSON_NAME).write_text(json.dumps(_plain(leaderboard_json(results, boards, runs)),
                                            indent=1, allow_nan=False, default=str)
                                 + "\n", "utf-8")
    log.info("wrote %d pages into %s", len(written), out)
    return written
