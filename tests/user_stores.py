"""Result stores of a given shape, written through the store's API, for the tests of what a user
sees (the terminal table, ``editbench compare``): no model is run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from editbench.core.records import Metric, PhaseTime, ScoreRow
from editbench.core.store import ResultsStore
from editbench.harness.cli.group import main

#: the default run's methods and ladder (``editbench run`` with no option, 200 edits)
DEFAULT_METHODS = ("alphaedit", "ft-l", "ft-m", "grace", "locft-bf", "malmen", "memit", "mend",
                   "retrieval", "rledit", "ultraedit", "wise")
DEFAULT_LADDER = (10, 20, 50, 100, 200)
#: the metrics a default run stores (the pocket task's, teacher-forced and generated)
POCKET_METRICS = ("efficacy_acc", "generalization_acc", "specificity_agree", "specificity_acc",
                  "locality_subject_agree", "locality_subject_acc", "locality_unrelated_agree",
                  "locality_unrelated_acc", "portability_acc", "efficacy_gen_em",
                  "generalization_gen_em", "efficacy_gen_prefix", "generalization_gen_prefix",
                  "specificity_gen_agree", "portability_gen_em")


def write_run(folder: Path, rates, run_id: str = "run-a", ladder=DEFAULT_LADDER,
              metrics=POCKET_METRICS, batch: int = 10, seed: int = 0) -> Path:
    """One pocket run in ``folder``: ``rates(label, n_edits, metric)`` is each method's success
    rate at a checkpoint (``rates`` is a mapping label -> that function, in run order); the
    per-edit scores are seeded Bernoulli draws of it."""
    rng = np.random.default_rng(seed)
    edits = ladder[-1]
    config = {"edits": edits, "batch_size": batch, "checkpoints": list(ladder), "seed": seed}
    with ResultsStore(folder) as store:
        store.ensure_run(run_id, task="pocket", model="pocket-small", config=config,
                         versions={"torch": "2.x"}, device="cpu (test)", seed=seed,
                         git_sha="abc123", dataset_hash="d5", n_edits=edits)
        store.set_baseline(run_id, {"pre_edit_accuracy": 0.97})
        store.save_run_outline(run_id, [Metric(m, m) for m in metrics],
                               [(s, s + batch) for s in range(0, edits, batch)])
        for index, (label, rate) in enumerate(rates.items()):
            store.start_cell(run_id, label, {"label": label}, f"h{index}")
            done = 0
            for n in ladder:
                times = [PhaseTime("edit", step, 0.1 + 0.01 * index)
                         for step in range(done // batch, n // batch)]
                rows = [ScoreRow(p, f"u{p}", m, float(rng.random() < rate(label, n, m)))
                        for p in range(n) for m in metrics]
                store.commit_checkpoint(run_id, label, n, rows, times, (200 + index) * 2**20)
                done = n
            store.finish_cell(run_id, label, "done")
    return folder


def fading(label: str, n: int, metric: str) -> float:
    """A method-dependent rate that falls with the edit count (some methods collapse)."""
    start = 0.3 + 0.05 * DEFAULT_METHODS.index(label) if label in DEFAULT_METHODS else 0.6
    speed = 0.004 * (DEFAULT_METHODS.index(label) % 4) if label in DEFAULT_METHODS else 0.0
    if metric.startswith(("specificity", "locality")):
        start = 0.95
    return float(np.clip(start - speed * n, 0.02, 0.98))


def default_run(folder: Path) -> Path:
    """The default run's shape: twelve methods, five checkpoints, the pocket metrics."""
    return write_run(folder, {m: fading for m in DEFAULT_METHODS})


def invoke(*args, cwd: Path | None = None):
    """The command line in ``cwd`` (the folder a user runs it from)."""
    here = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        return CliRunner().invoke(main, [str(a) for a in args])
    finally:
        os.chdir(here)
