"""``editbench plan``: each method's memory and time per phase, before anything is loaded.

The model is read from its config alone (a hub name, a local folder or a ``config.json``) and built
on the ``meta`` device; each method is constructed on it exactly as a run would construct it (its
settings for a recognised architecture included) and asked for its cost (``EditMethod.cost``,
formulas in ``core/costs.py``). ``editbench run`` asks the same question before it loads the model
and refuses a plan that does not fit the device unless ``--ignore-plan`` is given.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..core.costs import GiB, MethodCost, ModelShape, RunShape, evaluation_cost
from ..core.method import EditContext, MethodRef
from ..core.models import resolve_dtype
from ..core.plan import default_ladder, eval_positions, parse_checkpoints

log = logging.getLogger(__name__)


class _NoTokenizer:
    """What :class:`EditContext` needs of a tokenizer when the plan builds a method: nothing is encoded."""

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
    return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)


def model_shape(source: str, dtype: str = "auto", trust_remote_code: bool = False) -> ModelShape:
    config = read_config(source, trust_remote_code)
    if dtype == "auto":  # what ``--dtype auto`` loads: the checkpoint's own dtype, float32 if it names none
        named = getattr(config, "torch_dtype", None) or getattr(config, "dtype", None)
        chosen = named if isinstance(named, torch.dtype) else getattr(torch, str(named or "float32"), torch.float32)
    else:
        chosen = resolve_dtype(dtype, torch.device("cuda"))  # the plan is for the device the model will edit on
    path = Path(source)
    label = path.stem if path.is_file() else path.name  # llama-3-8b.json -> llama-3-8b
    return ModelShape.from_config(config, chosen, label=label or source)


def scored_records(edits: int, batch_size: int, checkpoints: str | None, eval_sample: int | None) -> int:
    ladder = parse_checkpoints(checkpoints, edits, batch_size) if checkpoints else default_ladder(edits, batch_size)
    return sum(len(eval_positions(n, eval_sample, 0)) if eval_sample else n for n in ladder)


@dataclass(frozen=True)
class PlannedMethod:
    label: str
    cost: MethodCost | None  # None: the method has no cost model

    def fits(self, run: RunShape) -> bool:
        return self.cost is None or self.cost.fits(run)


def plan_methods(shape: ModelShape, run: RunShape, labels: Sequence[str],
                 params: Mapping[str, Mapping[str, str]] | None = None) -> list[PlannedMethod]:
    """Each method built on the meta-device model with the run's settings, and its cost."""
    from .. import methods  # noqa: F401  (registers them)

    out = []
    with tempfile.TemporaryDirectory() as scratch:
        for label in labels:
            ref = MethodRef.parse(label)
            config = ref.config(params or {}, shape.architecture)
            ctx = EditContext(model=shape.meta, tokenizer=_NoTokenizer(), layout=shape.layout,
                              device=torch.device("meta"), cache_dir=Path(scratch), task=None,  # type: ignore[arg-type]
                              seed=0, generator=torch.Generator(), master_copies=run.master_copies)
            cost = ref.cls(config, ctx).cost(shape, run)
            if cost is not None:
                cost = replace(cost, method=ref.label, phases=(*cost.phases, evaluation_cost(shape, run)))
            out.append(PlannedMethod(ref.label, cost))
    return out


def _gib(n: int) -> str:
    return f"{n / GiB:,.1f}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:,.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:,.0f} min"
    return f"{seconds / 3600:,.1f} h"


def plan_table(shape: ModelShape, run: RunShape, planned: Sequence[PlannedMethod]) -> str:
    """The plan as a Markdown table: one row per method and phase, peak memory and time."""
    lines = [f"Plan for {shape.label} ({shape.n_params / 1e9:,.2f}B parameters, "
             f"{str(shape.dtype).removeprefix('torch.')}"
             f"{', recognised as ' + shape.architecture if shape.architecture else ''}): {run.edits:,} edits in batches "
             f"of {run.batch_size}, {_gib(run.device_bytes)} GiB device memory, "
             f"{run.flops_per_second / 1e12:,.0f} TFLOP/s sustained", "",
             "| method | phase | peak GiB | time | fits | note |", "|---|---|---:|---:|---|---|"]
    for item in planned:
        if item.cost is None:
            lines.append(f"| {item.label} | - | - | - | ? | no cost model |")
            continue
        for phase in item.cost.phases:
            peak = item.cost.peak(phase)
            lines.append(f"| {item.label} | {phase.phase} | {_gib(peak)} | {_duration(item.cost.seconds(phase, run))} "
                         f"| {'yes' if peak <= run.device_bytes else '**no**'} | {phase.note} |")
    return "\n".join(lines)


def device_memory(device: torch.device) -> int:
    """Bytes the run's device holds: the GPU's memory, or the machine's for CPU runs."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    import psutil

    return psutil.virtual_memory().total


# -- the command -----------------------------------------------------------------------------------
import click  # noqa: E402  (the command below; the functions above are the library)

from ..core.configs import DTYPE_CHOICES, parse_overrides  # noqa: E402


@click.command()
@click.option("--model", required=True, help="Hub name, local folder or config.json of the model to edit.")
@click.option("--methods", default=None, metavar="A,B", help="Methods (NAME or NAME@PRESET); default: every method.")
@click.option("--edits", type=int, default=20000, show_default=True)
@click.option("--batch-size", type=int, default=100, show_default=True)
@click.option("--checkpoints", default=None, metavar="N,N,...", help="As for run; default: the 1-2-5 ladder.")
@click.option("--eval-sample", type=int, default=1000, show_default=True, help="Edits scored at each checkpoint.")
@click.option("--dtype", default="bfloat16", show_default=True, type=click.Choice(DTYPE_CHOICES))
@click.option("--device-memory", type=float, default=80.0, show_default=True, help="GiB on the device.")
@click.option("--tflops", type=float, default=400.0, show_default=True,
              help="Sustained TFLOP/s of the device (400: about 40% of an H100's dense bf16 peak).")
@click.option("--tokens-per-record", type=int, default=32, show_default=True, help="Prompt and answer tokens of a record.")
@click.option("--pairs-per-record", type=int, default=3, show_default=True,
              help="Pairs scored per evaluated edit (the edit, its paraphrases, its neighbours).")
@click.option("--train-records", type=int, default=10000, show_default=True,
              help="Records the trained editors learn from (their max_train_records caps it).")
@click.option("--gen-eval", default="on", show_default=True, type=click.Choice(["on", "off"]))
@click.option("--master-copy/--no-master-copy", default=True, show_default=True)
@click.option("--param", "params", multiple=True, metavar="NAME.FIELD=VALUE", help="Method settings, as for run.")
@click.option("--trust-remote-code", is_flag=True)
def plan(model: str, methods: str | None, edits: int, batch_size: int, checkpoints: str | None, eval_sample: int,
         dtype: str, device_memory: float, tflops: float, tokens_per_record: int, pairs_per_record: int,
         train_records: int, gen_eval: str, master_copy: bool, params: tuple[str, ...], trust_remote_code: bool) -> None:
    """Print each method's peak memory and time per phase for a model, before anything runs."""
    from ..methods import METHODS

    shape = model_shape(model, dtype, trust_remote_code)
    run = RunShape(edits=edits, batch_size=batch_size,
                   scored_records=scored_records(edits, batch_size, checkpoints, eval_sample),
                   pairs_per_record=pairs_per_record, tokens_per_record=tokens_per_record, train_records=train_records,
                   generated=gen_eval == "on", flops_per_second=tflops * 1e12, device_bytes=int(device_memory * GiB),
                   master_copies=master_copy)
    labels = [m.strip() for m in methods.split(",")] if methods else [n for n, c in METHODS.items() if not c.needs_download]
    planned = plan_methods(shape, run, labels, parse_overrides(params))
    click.echo(plan_table(shape, run, planned))
    misfits = [p.label for p in planned if not p.fits(run)]
    if misfits:
        click.echo(f"does not fit in {device_memory:g} GiB: {', '.join(misfits)}", err=True)
