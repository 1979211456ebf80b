"""The ``editbench`` command line. Console output happens here and in the commands it adds.

Importing this module must stay cheap: ``editbench --help`` loads click and the command modules,
and those import torch, pandas and seaborn only inside the functions that need them
(``tests/test_layers.py`` checks that ``--help`` loads no torch).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ..core.configs import DTYPE_CHOICES, PROBE_BACKENDS, parse_overrides


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


class SeedList(click.ParamType):
    """``0`` or ``0,1,2``: one run per seed."""

    name = "N[,N...]"

    def convert(self, value, param, ctx) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            seeds = tuple(int(part) for part in str(value).split(",") if part.strip())
        except ValueError:
            self.fail(f"{value!r}: expected integers, e.g. 0 or 0,1,2", param, ctx)
        if not seeds:
            self.fail("name at least one seed", param, ctx)
        return seeds


def split_list(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip()) if text else ()


def _parse_editors(items: tuple[str, ...]) -> dict[str, Path]:
    parsed = {}
    for item in items:
        method, sep, folder = item.partition("=")
        if not sep or not method or not folder:
            raise click.BadParameter(f"{item!r}: expected METHOD=DIR", param_hint="--editor")
        parsed[method] = Path(folder)
    return parsed


def task_and_data(task: str | None, data: str | None) -> tuple[str | None, str | None]:
    """``--task my_edits.jsonl`` is short for ``--task jsonl --data my_edits.jsonl``."""
    if task is not None and (task.endswith(".jsonl") or (Path(task).suffix and Path(task).exists())):
        if data is not None:
            raise click.BadParameter(f"{task!r} is a file; pass either it or --data, not both", param_hint="--task")
        return "jsonl", task
    return task, data


@main.command()
@click.option("--methods", default=None, metavar="A,B",
              help="Comma-separated methods, NAME or NAME@PRESET (see `editbench list`); default: every method "
                   "that needs no download.")
@click.option("--task", default=None,
              help="A registered task (default: the built-in pocket world), or a path to a JSONL file of your own edits.")
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
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(DTYPE_CHOICES),
              help="Weights dtype; auto = float32 on CPU, bfloat16 on GPU.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", "seeds", type=SeedList(), default="0", show_default=True,
              help="Seeds the edit order and every method; several seeds make a sweep (one run per seed).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("editbench-results"), show_default=True,
              help="Results folder (SQLite store and snapshots); rerun the same command to resume.")
@click.option("--param", "params", multiple=True, metavar="NAME.FIELD=VALUE",
              help="Set a method's or task's setting, e.g. --param ft-m.lr=1e-3 (repeatable).")
@click.option("--editor", "editors", multiple=True, metavar="METHOD=DIR",
              help="Edit with a trained editor (e.g. rledit=DIR from `editbench train`) instead of training one; "
                   "repeatable.")
@click.option("--lenient", is_flag=True,
              help="Skip malformed data records (counted, with reasons, in the log) instead of stopping.")
@click.option("--capability", default=None, metavar="NAME,NAME",
              help="General-capability question sets asked after editing: sst2, mrpc, cola, rte, nli, mmlu.")
@click.option("--capability-data", default=None, metavar="DIR",
              help="Folder with NAME.json(l) files of those sets; default: the Hugging Face datasets.")
@click.option("--capability-limit", type=int, default=100, show_default=True, help="Questions per set.")
@click.option("--capability-at", default=None, metavar="N,N",
              help="Checkpoints at which to ask them; default: the last one (and always the unedited model).")
@click.option("--probe-backend", default="auto", show_default=True, type=click.Choice(PROBE_BACKENDS),
              help="Who scores prompts: Hugging Face transformers, or vLLM (auto: vLLM when installed and on a GPU).")
@click.option("--vllm-memory", type=float, default=0.4, show_default=True,
              help="Share of GPU memory the vLLM engine takes (gpu_memory_utilization); the edited model keeps the rest.")
@click.option("--executor", default="local", show_default=True, type=click.Choice(["local", "ray"]),
              help="Run the (method, seed) cells here one by one, or as Ray tasks (pip install 'editbench[ray]').")
@click.option("--ray-address", default=None, help="Ray cluster to join (default: start a local one).")
@click.option("--trust-remote-code", is_flag=True, help="Allow the model's own Python code from the hub to run.")
def run(**options) -> None:
    """Edit a fresh copy of the model with each method, batch after batch, and score it at checkpoints."""
    from ..core.store import ResultsStore
    from .executors import run_local, run_ray
    from .runner import RunSpec

    executor, address, seeds = options.pop("executor"), options.pop("ray_address"), options.pop("seeds")
    task, data = task_and_data(options.pop("task"), options.pop("data"))
    try:
        spec = RunSpec(
            methods=split_list(options.pop("methods")),
            capability=split_list(options.pop("capability")),
            params=parse_overrides(options.pop("params")),
            editors=_parse_editors(options.pop("editors")),
            task=task, data=data, seed=seeds[0],
            **options,
        )
        results = run_ray(spec, seeds, address) if executor == "ray" else run_local(spec, seeds)
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
    from .evaluate import CORE_METRICS

    both = not (only_methods or only_tasks)
    if only_methods or both:
        click.echo("methods:")
        for name, cls in METHODS.items():
            click.echo(f"  {name:<12} {cls.description}")
    if only_tasks or both:
        click.echo("tasks:")
        default = TASKS.default()
        for name, cls in TASKS.items():
            click.echo(f"  {name:<12} {cls.description}{' (default)' if name == default else ''}")
            click.echo(f"  {'':<12} metrics: {', '.join(m.name for m in (*CORE_METRICS, *cls.metrics))}")


def _add_subcommands() -> None:
    """Commands that live beside the code they drive (each module imports its heavy parts lazily)."""
    from ..reports.cli import publish, report
    from .bench import bench
    from .train import train

    for command in (train, report, publish, bench):
        main.add_command(command)


_add_subcommands()

if __name__ == "__main__":
    main()
