"""``editbench plan``, the command (``harness/plan/estimate.py`` is the library; this module stays
light so that ``editbench --help`` loads no torch)."""

from __future__ import annotations

import click

from ...core.configs import DTYPE_CHOICES, parse_overrides


@click.command()
@click.option("--model", required=True,
              help="Hub name, local folder or config.json of the model to edit.")
@click.option("--methods", default=None, metavar="A,B",
              help="Methods (NAME or NAME@PRESET); default: every method.")
@click.option("--edits", type=int, default=20000, show_default=True)
@click.option("--batch-size", type=int, default=100, show_default=True)
@click.option("--checkpoints", default=None, metavar="N,N,...",
              help="As for run; default: the 1-2-5 ladder.")
@click.option("--eval-sample", type=int, default=1000, show_default=True,
              help="Edits scored at each checkpoint.")
@click.option("--dtype", default="bfloat16", show_default=True, type=click.Choice(DTYPE_CHOICES))
@click.option("--device-memory", type=float, default=80.0, show_default=True,
              help="GiB on the device.")
@click.option("--tflops", type=float, default=400.0, show_default=True,
              help="Sustained TFLOP/s of the device (400: about 40% of an H100's dense bf16 peak).")
@click.option("--tokens-per-record", type=int, default=32, show_default=True,
              help="Prompt and answer tokens of a record.")
@click.option("--pairs-per-record", type=int, default=3, show_default=True,
              help="Pairs scored per evaluated edit (the edit, its paraphrases, its neighbours).")
@click.option("--train-records", type=int, default=10000, show_default=True,
              help="Records the trained editors learn from (their max_train_records caps it).")
@click.option("--gen-eval", default="on", show_default=True, type=click.Choice(["on", "off"]))
@click.option("--master-copy/--no-master-copy", default=True, show_default=True)
@click.option("--param", "params", multiple=True, metavar="NAME.FIELD=VALUE",
              help="Method settings, as for run.")
@click.option("--trust-remote-code", is_flag=True)
def plan(model: str, methods: str | None, edits: int, batch_size: int, checkpoints: str | None,
         eval_sample: int, dtype: str, device_memory: float, tflops: float, tokens_per_record: int,
         pairs_per_record: int, train_records: int, gen_eval: str, master_copy: bool,
         params: tuple[str, ...], trust_remote_code: bool) -> None:
    """Print each method's peak memory and time per phase for a model, before anything runs."""
    from ...core.costs import GiB, RunShape
    from ...methods import METHODS
    from ..plan.estimate import estimate_methods, model_shape, plan_table, scored_records
    from ..plan.settings import RunSpec

    counts = RunSpec(checkpoints=checkpoints).checkpoints if checkpoints else ()
    shape = model_shape(model, dtype, trust_remote_code)
    run = RunShape(edits=edits, batch_size=batch_size,
                   scored_records=scored_records(edits, batch_size, counts, eval_sample),
                   pairs_per_record=pairs_per_record, tokens_per_record=tokens_per_record,
                   train_records=train_records, generated=gen_eval == "on",
                   flops_per_second=tflops * 1e12, device_bytes=int(device_memory * GiB),
                   master_copies=master_copy)
    labels = ([m.strip() for m in methods.split(",")] if methods
              else [n for n, c in METHODS.items() if not c.needs_download])
    planned = estimate_methods(shape, run, labels, parse_overrides(params))
    click.echo(plan_table(shape, run, planned))
    misfits = [p.label for p in planned if not p.fits(run)]
    if misfits:
        click.echo(f"does not fit in {device_memory:g} GiB: {', '.join(misfits)}", err=True)
