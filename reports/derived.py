"""Metrics a report derives from stored ones, per edit: the mirage gap.

The gap between an edit's teacher-forced and generated scores ("The Mirage of Model Editing",
ACL 2025) shows how much teacher forcing flatters a method: ``efficacy_mirage_gap`` is
``efficacy_acc - efficacy_gen_em`` of the same edit at the same checkpoint, and likewise for
generalization. Computed per edit, it gets a mean and an interval like any stored metric, a column
and a plot; it is not ranked (a small gap is honest measurement, not a better edit). Stores without
generated metrics simply have no gap.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from .collect import Results

KEYS = ["run_id", "method", "n_edits", "position", "uid"]


@dataclass(frozen=True)
class Difference:
    name: str
    minuend: str
    subtrahend: str
    description: str


MIRAGE_GAPS = (
    Difference("efficacy_mirage_gap", "efficacy_acc", "efficacy_gen_em",
               "efficacy_acc minus efficacy_gen_em of the same edit: how much teacher forcing "
               "flatters the edit (0: the model generates what it ranks first)"),
    Difference("generalization_mirage_gap", "generalization_acc", "generalization_gen_em",
               "generalization_acc minus generalization_gen_em of the same edit"),
)


def with_derived(scores: pd.DataFrame, metrics: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``scores`` with the derived per-edit rows appended, ``metrics`` (the catalogue) with their
    entries, for every run that stored both parts of a difference."""
    new_scores, new_entries = [], []
    present = set(scores["metric"].unique())
    for diff in MIRAGE_GAPS:
        if diff.name in present:  # already derived
            continue
        left = scores[scores["metric"] == diff.minuend]
        right = scores[scores["metric"] == diff.subtrahend]
        if left.empty or right.empty:
            continue
        joined = left.merge(right, on=KEYS, suffixes=("_a", "_b"))
        if joined.empty:
            continue
        new_scores.append(joined[KEYS].assign(metric=diff.name,
                                              value=joined["value_a"] - joined["value_b"]))
        for run_id in joined["run_id"].unique():
            new_entries.append({"run_id": run_id, "ord": 10_000 + len(new_entries),
                                "name": diff.name, "description": diff.description,
                                "higher_is_better": False, "ranked": False})
    if not new_scores:
        return scores, metrics
    scores = pd.concat([scores, *new_scores], ignore_index=True)
    metrics = pd.concat([metrics.assign(ranked=True) if "ranked" not in metrics else metrics,
                         pd.DataFrame.from_records(new_entries)], ignore_index=True)
    return scores, metrics


def derive(results: Results) -> Results:
    """The same results with the derived metrics added (idempotent)."""
    scores, metrics = with_derived(results.scores, results.metrics)
    return results if scores is results.scores else replace(results, scores=scores, metrics=metrics)
