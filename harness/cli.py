"""The ``editbench`` command line. Console output happens here and nowhere else."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from .configs import parse_overrides


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (default: torch's own choice). Set it when runs share a machine: "
                   "oversubscribed threads make each run many times slower.")
@click.version_option(package_name="editbench")
def main(verbose: bool, threads: int | None) -> None:
    """editbench: benchmark lifelong knowledge editing of language models."""
    _setup_logging(verbose)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _split_list(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip()) if text else ()


def _parse_checkpoints(items: tuple[str, ...]) -> dict[str, Path]:
    parsed = {}
    for item in items:
        method, sep, folder = item.partition("=")
        if not sep or not method or not folder:
            raise click.BadParameter(f"{item!r}: expected METHOD=DIR", param_hint="--method-checkpoint")
        parsed[method] = Path(folder)
    return parsed


@main.command()
@click.option("--methods", default=None, metavar="A,B",
              help="Comma-separated methods (see `editbench list`); default: every method that needs no download.")
@click.option("--task", default="pocket", show_default=True,
              help="A registered task, or a path to a JSONL file of your own edits.")
@click.option("--data", default=None, help="The task's data: a local file, an http(s) URL or a Hugging Face datasets id.")
@click.option("--split", default="eval", show_default=True, help="Which split of the task to edit with.")
@click.option("--limit", type=int, default=None, help="Use only the first N records of the split.")
@click.option("--edits", type=int, default=None, help="Number of edits; default: the task's default (200 for pocket).")
@click.option("--batch-size", type=int, default=10, show_default=True, help="Edits applied per batch.")
@click.option("--checkpoints", default=None, metavar="N,N,...",
              help="Edit counts at which to evaluate; default: a 1-2-5 ladder up to --edits.")
@click.option("--eval-sample", type=int, default=None,
              help="Evaluate a seeded sample of N edits (stratified by position) instead of all edits so far.")
@click.option("--model", default=None, help="Hugging Face hub name or local path; default: the task's own model.")
@click.option("--dtype", default="auto", show_default=True,
              type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
              help="Weights dtype; auto = float32 on CPU, bfloat16 on GPU.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", default="0", show_default=True, metavar="N[,N...]",
              help="Seeds the edit order and every method; several seeds make a sweep (one run per seed).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("editbench-results"), show_default=True,
              help="Results folder (SQLite store and snapshots); rerun the same command to resume.")
@click.option("--param", "params", multiple=True, metavar="NAME.FIELD=VALUE",
              help="Set a method's or task's setting, e.g. --param ft-m.lr=1e-3 (repeatable).")
@click.option("--method-checkpoint", "method_checkpoints", multiple=True, metavar="METHOD=DIR",
              help="Use a trained artefact for a method (e.g. rledit=DIR from `editbench train`); repeatable.")
@click.option("--lenient", is_flag=True,
              help="Skip malformed data records (counted, with reasons, in the log) instead of stopping.")
@click.option("--probes", default=None, metavar="NAME,NAME",
              help="General-capability probes after editing: sst2, mrpc, cola, rte, nli, mmlu.")
@click.option("--probe-data", default=None, metavar="DIR",
              help="Folder with NAME.json(l) probe files; default: the Hugging Face datasets.")
@click.option("--probe-limit", type=int, default=100, show_default=True, help="Questions per probe set.")
@click.option("--probe-at", default=None, metavar="N,N",
              help="Checkpoints at which to run the probes; default: the last one (and always the unedited model).")
@click.option("--probe-backend", default="auto", show_default=True, type=click.Choice(["auto", "hf", "vllm"]),
              help="Who scores prompts: Hugging Face transformers, or vLLM (auto: vLLM when installed and on a GPU).")
@click.option("--vllm-memory", type=float, default=0.4, show_default=True,
              help="Share of GPU memory the vLLM engine takes (gpu_memory_utilization); the edited model keeps the rest.")
@click.option("--executor", default="local", show_default=True, type=click.Choice(["local", "ray"]),
              help="Run the (method, seed) cells here one by one, or as Ray tasks (pip install 'editbench[ray]').")
@click.option("--ray-address", default=None, help="Ray cluster to join (default: start a local one).")
@click.option("--trust-remote-code", is_flag=True, help="Allow the model's own Python code from the hub to run.")
def run(**options) -> None:
    """Edit a fresh copy of the model with each method, batch after batch, and score it at checkpoints."""
    from .executors import run_local, run_ray
    from .runner import RunSpec
    from .store import ResultsStore

    executor, address = options.pop("executor"), options.pop("ray_address")
    try:
        seeds = tuple(int(s) for s in _split_list(options.pop("seed")))
    except ValueError:
        raise click.BadParameter("expected integers, e.g. 0 or 0,1,2", param_hint="--seed") from None
    try:
        spec = RunSpec(
            methods=_split_list(options.pop("methods")),
            probes=_split_list(options.pop("probes")),
            params=parse_overrides(options.pop("params")),
            method_checkpoints=_parse_checkpoints(options.pop("method_checkpoints")),
            seed=seeds[0],
            **options,
        )
        if executor == "ray":
            results = run_ray(spec, seeds, address)
        else:
            results = run_local(spec, seeds)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc).strip("'\"")) from None
    with ResultsStore(spec.out) as store:
        for runner, outcome in results:
            _print_run(store, runner, outcome)
    failed = [(label, status) for _, o in results for label, status in o.statuses.items() if status != "done"]
    for label, status in failed:
        click.echo(f"{label}: {status}", err=True)
    click.echo(f"results: {results[0][1].store_path}")
    sys.exit(0 if all(o.ok for _, o in results) else 1)


def _print_run(store, runner, outcome) -> None:
    from ..reports.summary import (
        capability_frame,
        format_table,
        run_summary,
        summary_frame,
        task_metrics_frame,
    )

    runs = store.runs().set_index("run_id")
    baseline = runs.loc[outcome.run_id, "baseline"] or {}
    click.echo("")
    click.echo(f"run {outcome.run_id}  task={runner.task.name}  model={runner.model_source}  edits={runner.edits}  "
               f"seed={runner.spec.seed}  device={runs.loc[outcome.run_id, 'device']}")
    if "pre_edit_accuracy" in baseline:
        click.echo(f"unedited model accuracy on the edited facts: {baseline['pre_edit_accuracy']:.3f}")
    summary = run_summary(store, outcome.run_id)
    click.echo(format_table(summary_frame(summary)))
    extra = task_metrics_frame(summary)
    if not extra.empty:
        click.echo(f"\n{runner.task.name} metrics:")
        click.echo(format_table(extra))
    capability = capability_frame(store, outcome.run_id)
    if not capability.empty:
        click.echo("\ngeneral capability (accuracy; '(unedited)' is the model before any edit):")
        click.echo(format_table(capability))


@main.command("list")
@click.option("--methods", "only_methods", is_flag=True, help="Only methods.")
@click.option("--tasks", "only_tasks", is_flag=True, help="Only tasks.")
def list_(only_methods: bool, only_tasks: bool) -> None:
    """Show the registered methods and tasks, one line each."""
    from ..methods import METHODS
    from ..tasks import TASKS

    both = not (only_methods or only_tasks)
    if only_methods or both:
        click.echo("methods:")
        for name, cls in METHODS.items():
            click.echo(f"  {name:<12} {cls.description}")
    if only_tasks or both:
        click.echo("tasks:")
        from .evaluate import CORE_METRICS

        for name, cls in TASKS.items():
            click.echo(f"  {name:<12} {cls.description}")
            click.echo(f"  {'':<12} metrics: {', '.join([*CORE_METRICS, *cls.metrics])}")


def _add_subcommands() -> None:
    """Commands that live beside the code they drive."""
    from ..reports.cli import publish, report
    from .bench import bench
    from .train import train

    for command in (train, report, publish, bench):
        main.add_command(command)


_add_subcommands()

if __name__ == "__main__":
    main()
