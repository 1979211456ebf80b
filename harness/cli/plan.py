"""``editbench plan``: a run's plan at a scale and on a device of your choosing.

It resolves the run a ``editbench run`` with these settings would make (``RunPlan``: the default
task sized for ``--edits``, the schedule, each method's setup for the model's architecture), then
estimates each method's cost on the device named here rather than this machine's
(``harness/plan/estimate.py``). ``--tokens-per-record`` and ``--pairs-per-record`` replace what the
plan measured on its records, for data of another shape. Reads no weights."""

from __future__ import annotations

import click

from ...core.configs import DTYPE_CHOICES
from .values import COUNTS, NAMES, POSITIVE


@click.command()
@click.option("--model", required=True,
              help="Hub name, local folder or config.json of the model to edit.")
@click.option("--methods", type=NAMES, default=None, metavar="A,B",
              help="Methods (NAME or NAME@PRESET); default: every method.")
@click.option("--edits", type=click.IntRange(min=1), default=20000, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--checkpoints", type=COUNTS, default=None, metavar="N,N,...",
              help="As for run; default: the 1-2-5 ladder.")
@click.option("--eval-sample", type=click.IntRange(min=2), default=1000, show_default=True,
              help="Edits scored at each checkpoint.")
@click.option("--dtype", default="bfloat16", show_default=True, type=click.Choice(DTYPE_CHOICES))
@click.option("--device-memory", type=POSITIVE, default=80.0, show_default=True,
              help="GiB on the device.")
@click.option("--tflops", type=POSITIVE, default=400.0, show_default=True,
              help="Sustained TFLOP/s of the device (400: about 40% of an H100's dense bf16 peak).")
@click.option("--tokens-per-record", type=click.IntRange(min=1), default=None,
              help="Prompt and answer tokens of a record (default: the plan's records', by the "
                   "model's tokenizer, or about one per four characters for a bare config).")
@click.option("--pairs-per-record", type=click.IntRange(min=1), default=None,
              help="Pairs scored per evaluated edit (default: the plan's records': the edit, its "
                   "paraphrases, its neighbours).")
@click.option("--train-records", type=click.IntRange(min=1), default=10000, show_default=True,
              help="Records the trained editors learn from (their max_train_records caps it).")
@click.option("--gen-eval", default="on", show_default=True, type=click.Choice(["on", "off"]))
@click.option("--master-copy/--no-master-copy", default=True, show_default=True)
@click.option("--param", "params", multiple=True, metavar="NAME.FIELD=VALUE",
              help="Method settings, as for run.")
@click.option("--trust-remote-code", is_flag=True)
def plan(model: str, methods: tuple[str, ...] | None, edits: int, batch_size: int,
         checkpoints: tuple[int, ...] | None,
         eval_sample: int, dtype: str, device_memory: float, tflops: float,
         tokens_per_record: int | None, pairs_per_record: int | None, train_records: int,
         gen_eval: str, master_copy: bool, params: tuple[str, ...],
         trust_remote_code: bool) -> None:
    """Print each method's peak memory and time per phase for a model at a scale and on a device
    of your choosing, before anything runs."""
    from dataclasses import replace

    from ...core.costs import GiB
    from ...tasks import TASKS
    from ..plan.estimate import estimate_methods, plan_table
    from ..plan.resolve import resolve
    from ..plan.settings import RunSpec, layered

    task = TASKS.default()
    overrides = layered([({"params": list(params)}, "")]).get("params", {})
    sized = {**TASKS[task].sized_for(edits), **overrides.get(task, {})}  # enough records
    spec = RunSpec(model=model, methods=methods or (), edits=edits, batch_size=batch_size,
                   checkpoints=checkpoints or (), eval_sample=eval_sample, dtype=dtype,
                   gen_eval=gen_eval == "on", master_copy=master_copy, device="cpu",
                   params={**overrides, task: sized}, trust_remote_code=trust_remote_code)
    run_plan = resolve(spec)
    if run_plan.model_shape is None or run_plan.run_shape is None:
        raise ValueError(f"--model {model}: its config cannot be read, so nothing can be planned")
    measured = run_plan.run_shape
    run = replace(measured, device_bytes=int(device_memory * GiB), flops_per_second=tflops * 1e12,
                  tokens_per_record=tokens_per_record or measured.tokens_per_record,
                  pairs_per_record=pairs_per_record or measured.pairs_per_record,
                  train_records=train_records)
    planned = estimate_methods(run_plan.model_shape, run, [m.label for m in run_plan.methods],
                               spec.params)
    click.echo(plan_table(run_plan.model_shape, run, planned))
    misfits = [p.label for p in planned if not p.fits(run)]
    if misfits:
        click.echo(f"does not fit in {device_memory:g} GiB: {', '.join(misfits)}", err=True)
