"""What a column means: label, description and direction for every metric a store may hold.

The runner writes each metric's description and direction into the store with the run (its
metric catalogue), so reports present a task's metrics without importing the task. A metric that
a store has no entry for (one written by an older editbench) still gets a column, a readable label
and the direction "higher is better" unless its name says it is a cost.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd

#: Name fragments of metrics where less is better (perplexities, losses, costs).
_LOWER_IS_BETTER = ("perplexity", "ppl", "loss", "seconds", "memory", "kl")

#: Columns that do not come from per-edit scores but from the checkpoint's cost.
COST_COLUMNS = {
    "seconds_per_edit": ("s / edit", "wall-clock edit time divided by the edits made so far; "
                         "interval over edit batches"),
    "peak_memory_bytes": ("peak MiB", "peak memory up to this checkpoint (CUDA peak allocated on "
                          "GPU, peak RSS on CPU); one measurement, no interval"),
}


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    description: str
    higher_is_better: bool
    is_cost: bool = False
    #: whether the leaderboard marks a best and ties in this column; a diagnostic such as the mirage
    #: gap describes how a score was measured, not how good a method is
    ranked: bool = True


def _label(name: str) -> str:
    """``efficacy_acc`` -> ``efficacy (acc)``: the family first, the variant after."""
    family, _, variant = name.rpartition("_")
    if not family or variant in ("score", "rate", "gap"):
        return name.replace("_", " ")
    return f"{family.replace('_', ' ')} ({variant})"


def _lower_is_better(name: str) -> bool:
    parts = name.lower().split("_")
    return any(frag in parts or (len(frag) > 3 and frag in name.lower())
               for frag in _LOWER_IS_BETTER)


@dataclass(frozen=True)
class MetricInfo:
    """A catalogue entry: what the runner stored about a metric."""

    description: str
    higher_is_better: bool
    order: int
    ranked: bool = True


def metric_catalogue(metrics: pd.DataFrame, run_ids: Iterable[str]) -> dict[str, MetricInfo]:
    """The catalogue of ``run_ids`` from the store's ``metrics`` frame, in the runner's order (the
    core metrics first); where runs disagree the first run's entry stands."""
    chosen = metrics[metrics["run_id"].isin(list(run_ids))].sort_values(["ord"], kind="stable")
    catalogue: dict[str, MetricInfo] = {}
    for row in chosen.itertuples(index=False):
        catalogue.setdefault(row.name, MetricInfo(row.description, bool(row.higher_is_better),
                                                  int(row.ord), bool(getattr(row, "ranked", True))))
    return catalogue


def metric_columns(names: Iterable[str], catalogue: Mapping[str, MetricInfo]) -> list[Column]:
    """Columns for the metrics present: catalogued ones in the runner's order, then the rest by
    name."""
    present = set(names)
    known = sorted((m for m in present if m in catalogue), key=lambda m: catalogue[m].order)
    ordered = known + sorted(present - set(known))
    return [Column(m, _label(m), catalogue[m].description, catalogue[m].higher_is_better,
                   ranked=catalogue[m].ranked) if m in catalogue
            else Column(m, _label(m), "", not _lower_is_better(m)) for m in ordered]


CAPABILITY_PREFIX = "capability:"


def capability_columns(sets: Iterable[str], unedited: dict[str, float]) -> list[Column]:
    """One column per general-capability question set (SST-2, MMLU...), with the unedited model's
    accuracy in the description for reference."""
    columns = []
    for name in sorted(sets):
        text = (f"few-shot accuracy on {name} questions: does the model keep what it could "
                "already do")
        if name in unedited:
            text += f" (unedited model: {unedited[name]:.3f})"
        columns.append(Column(CAPABILITY_PREFIX + name, f"capability ({name})", text,
                              higher_is_better=True))
    return columns


#: on a CPU peak memory is the whole process's resident set (Python, libraries, the harness, the
#: model): it does not isolate what a method needs, so it is shown but not ranked there
CPU_MEMORY = ("peak resident memory of the whole editbench process on CPU (model, harness, "
              "libraries), not of the method alone; shown, not ranked")


def cost_columns(on_cpu: bool = False) -> list[Column]:
    """Time and memory; ``on_cpu``: some of the runs measured memory as a CPU process's RSS."""
    columns = []
    for key, (label, text) in COST_COLUMNS.items():
        memory_on_cpu = on_cpu and key == "peak_memory_bytes"
        columns.append(Column(key, label, CPU_MEMORY if memory_on_cpu else text,
                              higher_is_better=False, is_cost=True, ranked=not memory_on_cpu))
    return columns
