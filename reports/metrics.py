"""What a column means: label, description and direction for every metric a store may hold.

Reports render whatever metrics exist; a metric they have never heard of still gets a column, a
readable label and the direction "higher is better" unless its name says it is a cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..harness.evaluate import CORE_METRICS

#: Name fragments of metrics where less is better (perplexities, losses, costs).
_LOWER_IS_BETTER = ("perplexity", "ppl", "loss", "seconds", "memory", "kl")

#: Columns that do not come from per-edit scores but from the checkpoint's cost.
COST_COLUMNS = {
    "seconds_per_edit": ("s / edit", "wall-clock edit time divided by the edits made so far; "
                         "interval over edit batches"),
    "peak_memory_bytes": ("peak MiB", "peak memory up to this checkpoint (CUDA peak allocated on GPU, "
                          "peak RSS on CPU); one measurement, no interval"),
}


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    description: str
    higher_is_better: bool
    is_cost: bool = False


def _label(name: str) -> str:
    """``efficacy_acc`` -> ``efficacy (acc)``: the family first, the variant after."""
    family, _, variant = name.rpartition("_")
    if not family or variant in ("score", "rate"):
        return name.replace("_", " ")
    return f"{family.replace('_', ' ')} ({variant})"


def _lower_is_better(name: str) -> bool:
    parts = name.lower().split("_")
    return any(frag in parts or (len(frag) > 3 and frag in name.lower()) for frag in _LOWER_IS_BETTER)


def task_metric_descriptions(task: str) -> dict[str, str]:
    """The registered task's own metric descriptions; empty when the task is not installed here
    (a store made elsewhere is still readable, with plainer headers)."""
    try:
        from ..tasks import TASKS

        return dict(getattr(TASKS[task], "metrics", {}) or {})
    except Exception:  # an uninstalled plugin, or a registry that fails to import: plainer headers
        return {}


def metric_columns(names: Iterable[str], task: str = "") -> list[Column]:
    """Columns for the metrics present, core metrics first in their canonical order."""
    present = set(names)
    extra = task_metric_descriptions(task) if task else {}
    ordered = [m for m in CORE_METRICS if m in present] + sorted(present - set(CORE_METRICS))
    return [Column(m, _label(m), CORE_METRICS.get(m) or extra.get(m, ""), not _lower_is_better(m))
            for m in ordered]


CAPABILITY_PREFIX = "capability:"


def capability_columns(probes: Iterable[str], unedited: dict[str, float]) -> list[Column]:
    """One column per general-capability probe set (SST-2, MMLU...), with the unedited model's
    accuracy in the description for reference."""
    columns = []
    for probe in sorted(probes):
        text = f"few-shot accuracy on {probe} questions: does the model keep what it could already do"
        if probe in unedited:
            text += f" (unedited model: {unedited[probe]:.3f})"
        columns.append(Column(CAPABILITY_PREFIX + probe, f"capability ({probe})", text, higher_is_better=True))
    return columns


def cost_columns() -> list[Column]:
    return [Column(key, label, text, higher_is_better=False, is_cost=True)
            for key, (label, text) in COST_COLUMNS.items()]
