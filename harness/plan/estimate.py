"""Each method's memory and time per phase, estimated before anything is loaded.

The model is read from its config alone (a hub name, a local folder or a ``config.json``) and built
on the ``meta`` device; each method is constructed on it exactly as a run would construct it (its
settings for a recognised architecture included) and asked for its cost (``EditMethod.cost``,
formulas in ``core/costs.py``). Resolving a run (``resolve.py``) asks it for the run's plan, and
the preflight check refuses a plan that does not fit the device unless ``--ignore-plan`` is given;
``editbench plan`` prints it for a model and sizes of your choosing.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ...core.costs import GiB, MethodCost, ModelShape, PhaseCost, RunShape, evaluation_cost
from ...core.method import EditContext, MethodRef
from ...core.models import resolve_dtype
from ...core.schedule import checkpoint_ladder, eval_positions

log = logging.getLogger(__name__)


class _NoTokenizer:
    """What :class:`EditContext` needs of a tokenizer when the plan builds a method: nothing is
    encoded."""

    pad_token_id = 0

    def __call__(self, text, add_special_tokens: bool = True):
        return {"input_ids": [0] * len(text.split()) if isinstance(text, str) else []}


def read_config(source: str, trust_remote_code: bool = False):
    """A model's config from a ``config.json`` file, a local folder or a hub name (config only)."""
    from transformers import AutoConfig

    path = Path(source)
    if path.is_file():
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
            model_type = values.pop("model_type")
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{path}: not a model config.json with a model_type ({exc})") from None
        return AutoConfig.for_model(model_type, **values)
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"--model {source}: cannot read its config ({reason}); give a hub name "
                         "(with network), a local model folder or a config.json") from None


def model_shape(source: str, dtype: str = "auto", trust_remote_code: bool = False) -> ModelShape:
    config = read_config(source, trust_remote_code)
    # what ``--dtype auto`` loads: the checkpoint's own dtype, float32 if it names none
    if dtype == "auto":
        named = getattr(config, "torch_dtype", None) or getattr(config, "dtype", None)
        chosen = (named if isinstance(named, torch.dtype)
                  else getattr(torch, str(named or "float32"), torch.float32))
    else:
        # the plan is for the device the model will edit on
        chosen = resolve_dtype(dtype, torch.device("cuda"))
    path = Path(source)
    label = path.stem if path.is_file() else path.name  # llama-3-8b.json -> llama-3-8b
    return ModelShape.from_config(config, chosen, label=label or source)


def scored_records(edits: int, batch_size: int, checkpoints: Sequence[int],
                   eval_sample: int | None) -> int:
    ladder = checkpoint_ladder(checkpoints, edits, batch_size)
    return sum(len(eval_positions(n, eval_sample, 0)) if eval_sample else n for n in ladder)


@dataclass(frozen=True)
class MethodEstimate:
    label: str
    cost: MethodCost | None  # None: the method has no cost model
    #: what the method needs and lacks, each a one-line fix (``EditMethod.requirements``)
    missing: tuple[str, ...] = ()

    def fits(self, run: RunShape) -> bool:
        return self.cost is None or self.cost.fits(run)

    def largest_phase(self, host_shared: bool = False) -> tuple[PhaseCost, int] | None:
        """The phase that peaks highest and its peak bytes (``host_shared``: a CPU run, whose
        one memory holds the host's share too); None without a cost model."""
        if self.cost is None:
            return None
        phase = max(self.cost.phases, key=self.cost.peak)
        return phase, self.cost.peak(phase, host_shared=host_shared)

    def describe(self, host_shared: bool = False) -> dict[str, object]:
        """Peak bytes per phase, as plain data (None: the method has no cost model)."""
        if self.cost is None:
            return {"phases": None, "missing": list(self.missing)}
        return {"phases": {phase.phase: self.cost.peak(phase, host_shared=host_shared)
                           for phase in self.cost.phases},
                "host_bytes": self.cost.host_bytes, "missing": list(self.missing)}


def estimate_methods(shape: ModelShape, run: RunShape, labels: Sequence[str],
                 params: Mapping[str, Mapping[str, str]] | None = None, task=None,
                 train_records: Callable[[], list] | None = None,
                 editors: Mapping[str, Path] | None = None) -> list[MethodEstimate]:
    """Each method built on the meta-device model with the run's settings: its cost and what it
    lacks (its requirements are asked only when the run's ``task`` is given)."""
    from ... import methods  # noqa: F401  (registers them)

    out = []
    editors = editors or {}
    with tempfile.TemporaryDirectory() as scratch:
        for label in labels:
            ref = MethodRef.parse(label)
            config = ref.config(params or {}, shape.architecture)
            ctx = EditContext(model=shape.meta, tokenizer=_NoTokenizer(), layout=shape.layout,
                              device=torch.device("meta"), cache_dir=Path(scratch), task=task,
                              seed=0, generator=torch.Generator(), master_copies=run.master_copies,
                              train_records=train_records or (lambda: []),
                              trained_editor=editors.get(ref.label) or editors.get(ref.name))
            with torch.device("meta"):  # what a method builds for itself stays unallocated
                method = ref.cls(config, ctx)
            cost = method.cost(shape, run)
            if cost is not None:
                scored = replace(run, tokens_per_record=round(run.tokens_per_record
                                                              * cost.evaluation_tokens))
                cost = replace(cost, method=ref.label,
                               phases=(*cost.phases, evaluation_cost(shape, scored)))
            out.append(MethodEstimate(ref.label, cost,
                                      tuple(method.requirements()) if task is not None else ()))
    return out


def _gib(n: int) -> str:
    return f"{n / GiB:,.1f}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:,.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:,.0f} min"
    return f"{seconds / 3600:,.1f} h"


def plan_table(shape: ModelShape, run: RunShape, planned: Sequence[MethodEstimate]) -> str:
    """The plan as a Markdown table: one row per method and phase, peak memory and time."""
    lines = [f"Plan for {shape.label} ({shape.n_params / 1e9:,.2f}B parameters, "
             f"{str(shape.dtype).removeprefix('torch.')}"
             f"{', recognised as ' + shape.architecture if shape.architecture else ''}): "
             f"{run.edits:,} edits in batches "
             f"of {run.batch_size}, {_gib(run.device_bytes)} GiB device memory, "
             f"{run.flops_per_second / 1e12:,.0f} TFLOP/s sustained", "",
             "| method | phase | peak GiB | time | fits | note |", "|---|---|---:|---:|---|---|"]
    for item in planned:
        if item.cost is None:
            lines.append(f"| {item.label} | - | - | - | ? | no cost model |")
            continue
        for phase in item.cost.phases:
            peak = item.cost.peak(phase)
            lines.append(f"| {item.label} | {phase.phase} | {_gib(peak)} "
                         f"| {_duration(item.cost.seconds(phase, run))} "
                         f"| {'yes' if peak <= run.device_bytes else '**no**'} | {phase.note} |")
    hosted = [f"{item.label} {_gib(item.cost.host_bytes)} GiB"
              for item in planned if item.cost and item.cost.host_bytes]
    if hosted:
        lines += ["", "Host memory besides (key statistics, not on the device): "
                  + ", ".join(hosted)]
    return "\n".join(lines)


def device_memory(device: torch.device) -> int:
    """Bytes the run's device holds: the GPU's memory, or the machine's for CPU runs."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    import psutil

    return psutil.virtual_memory().total
