"""The ``editbench`` command line. Console output happens here and in the commands it adds.

Importing this module must stay cheap: ``editbench --help`` loads click and the command modules,
and those import torch, pandas and seaborn only inside the functions that need them
(``tests/test_layers.py`` checks that ``--help`` loads no torch).

A failure a user can act on (a bad option or file, a full or read-only disk, a busy or damaged
results store, a model that cannot be loaded, too little memory) ends every command with one line
that names the culprit and what would work (:func:`explain`); ``editbench --debug`` shows the
traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import sys
from pathlib import Path

import click

from ..core.configs import DTYPE_CHOICES, PROBE_BACKENDS
from .threads import mark_explicit as mark_threads_explicit


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _class(module: str, name: str) -> type | None:
    """An exception class of a module that is already loaded (an error from it cannot come otherwise),
    so explaining an error imports nothing heavy."""
    return getattr(sys.modules.get(module), name, None)


_OUT_OF_MEMORY = ("reduce --batch-size or --eval-sample, choose --dtype bfloat16 or a smaller model, "
                  "or free memory; rerun the same command to resume")


def _explain_os_error(exc: OSError) -> str:
    where = exc.filename or "a file"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (f"no space left writing {where} ({exc.strerror}); free disk space (or choose another --out or "
                "EDITBENCH_CACHE) and rerun the same command to resume")
    if exc.errno == errno.EROFS:
        return f"{where} is on a read-only file system; choose a writable --out (and EDITBENCH_CACHE)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied: {where}; choose a folder you can write (--out, EDITBENCH_CACHE)"
    if exc.errno == errno.ENOTDIR:
        return f"{where}: part of this path is a file, not a folder"
    if exc.errno == errno.EISDIR:
        return f"{where} is a folder, not a file"
    if exc.filename is None:
        return str(exc)
    return f"{exc.strerror or exc}: {where}"


def explain(exc: BaseException) -> str | None:
    """One line for an error a user can fix, naming the file or setting and what would work; ``None``
    for anything else (a bug, which keeps its traceback)."""
    message: str | None = None
    busy, store_error = _class("editbench.core.cache", "Busy"), _class("editbench.core.store", "StoreError")
    snapshot_error = _class("editbench.core.snapshot", "SnapshotError")
    artifact_error = _class("editbench.core.artifacts", "ArtifactError")
    torch_oom = _class("torch.cuda", "OutOfMemoryError")
    if any(cls is not None and isinstance(exc, cls) for cls in (busy, store_error, snapshot_error,
                                                                  artifact_error)):
        message = str(exc)
    elif isinstance(exc, MemoryError) or (torch_oom is not None and isinstance(exc, torch_oom)) or (
            isinstance(exc, RuntimeError) and ("out of memory" in str(exc) or "can't allocate memory" in str(exc))):
        message = f"out of memory ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); {_OUT_OF_MEMORY}"
    elif isinstance(exc, KeyError):
        message = str(exc).strip("'\"")
    elif isinstance(exc, OSError) and (exc.filename is not None or not isinstance(exc, FileNotFoundError)):
        message = _explain_os_error(exc)  # our own FileNotFoundErrors carry a whole sentence and no filename
    elif isinstance(exc, (ValueError, FileNotFoundError)):
        message = str(exc)
    elif isinstance(exc, sqlite3.Error):
        message = f"the results store under --out: {exc}"
    return " ".join(message.split()) if message is not None else None


#: the group's options, which may also be given after the command (``editbench run --threads 1``)
GLOBAL_FLAGS = ("-v", "--verbose", "--debug")
GLOBAL_VALUED = ("--threads",)


def hoist_global_options(args: list[str], commands: set[str]) -> list[str]:
    """Move the group's own options from after the command name to before it, so that
    ``editbench run --threads 1`` means ``editbench --threads 1 run``; everything else keeps its order."""
    start = next((i for i, arg in enumerate(args) if arg in commands), None)
    if start is None:
        return args
    head, tail, rest = list(args[:start]), [args[start]], args[start + 1:]
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--":
            tail += rest[i:]
            break
        if arg in GLOBAL_FLAGS or arg.startswith(tuple(f"{name}=" for name in GLOBAL_VALUED)):
            head.append(arg)
        elif arg in GLOBAL_VALUED and i + 1 < len(rest):
            head += [arg, rest[i + 1]]
            i += 1
        else:
            tail.append(arg)
        i += 1
    return head + tail


class EditbenchGroup(click.Group):
    """Runs a command and turns what :func:`explain` recognises into a one-line error; the group's
    options may come after the command too."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(list(args), set(self.commands)))

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            message = None if ctx.params.get("debug") else explain(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


@click.group(cls=EditbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.option("--debug", is_flag=True, help="Log debug messages and show the full traceback of any error.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch, stored with each run (default: OMP_NUM_THREADS if set, else one for "
                   "a model under 0.5M parameters on the CPU, else torch's own choice: one per core). Scores "
                   "move slightly with it (README, 'Same numbers on every machine'); it never depends on what "
                   "else runs.")
@click.version_option(package_name="editbench")
def main(verbose: bool, debug: bool, threads: int | None) -> None:
    """editbench: benchmark lifelong knowledge editing of language models."""
    _setup_logging(verbose or debug)
    mark_threads_explicit(threads is not None or "OMP_NUM_THREADS" in os.environ)  # harness/threads.py
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    elif click.get_current_context().invoked_subcommand in COMPUTING and "torch" not in sys.modules:
        waiting = wait_policy(other_editbench_processes(), os.environ)
        if waiting:  # read by OpenMP when torch is first imported; it changes speed, never a score
            os.environ.update(waiting)
            logging.getLogger(__name__).info(
                "other editbench processes run here: torch's threads sleep when idle instead of spinning "
                "(OMP_WAIT_POLICY=PASSIVE); --threads N shares the cores out (scores move slightly with it)")


#: the commands that run models (the others need no thread setting, and need not look for other processes)
COMPUTING = ("run", "train", "bench")


def other_editbench_processes() -> int:
    """How many other editbench commands run on this machine (a sweep, a test suite beside a run)."""
    import psutil

    own = {os.getpid(), os.getppid()}
    count = 0
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info["pid"] in own or not cmdline:
            continue
        if any(Path(part).name == "editbench" or part.startswith("editbench.") for part in cmdline[:3]):
            count += 1
    return count


def wait_policy(others: int, environ: dict[str, str]) -> dict[str, str]:
    """What to set so that several editbench processes can share the cores: OpenMP's passive wait,
    unless the user chose a policy. Never the thread count, which would change the scores with
    the machine's load. Measured on 2 cores (2026-12-05): two default runs started together took
    19 min each with spinning threads, 2 min 25 s with passive ones (3 min 48 s and 3 min 20 s
    when only the second saw the first), against 1 min 32 s alone; the same scores in every case.
    Alone, passive waiting made the run slower (2 min 32 s), so it is only chosen beside other
    processes."""
    if others and "OMP_WAIT_POLICY" not in environ:
        return {"OMP_WAIT_POLICY": "PASSIVE"}
    return {}


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
              help="Comma-separated methods, NAME or NAME@PRESET (see `editbench list --presets`); default: every "
                   "method that needs no download.")
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
@click.option("--restart", default=None, metavar="A,B",
              help="Drop these methods' stored results and snapshots in --out (this run's settings) and run them "
                   "again, e.g. after a damaged snapshot.")
@click.option("--gen-eval", default="on", show_default=True, type=click.Choice(["on", "off"]),
              help="Also score greedily generated answers (exact match, prefix, agreement with the unedited model) "
                   "beside the teacher-forced scores.")
@click.option("--gen-max-tokens", type=int, default=16, show_default=True,
              help="At most this many new tokens per generated answer (the target's length plus three otherwise).")
@click.option("--ignore-plan", is_flag=True,
              help="Run even when the plan (editbench plan) says a method will not fit the device's memory.")
@click.option("--device-map", default=None, type=click.Choice(["auto"]),
              help="auto: shard the model over every visible GPU (accelerate), for models larger than one GPU.")
@click.option("--master-copy/--no-master-copy", default=True, show_default=True,
              help="Keep float32 master copies of edited bf16/fp16 weights so that small updates are not "
                   "rounded away over thousands of batches (off only to measure the difference).")
@click.option("--save-model", type=click.IntRange(min=1), default=None, metavar="N",
              help="Save each method's edited model at checkpoint N (save_pretrained, safetensors, with the "
                   "tokenizer) under OUT/models/, for lm-evaluation-harness or serving.")
# -- run files (harness/runfile.py) --
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), default=None, is_eager=True,
              expose_value=True, callback=lambda ctx, _, path: _load_run_file(ctx, path),
              help="A run file (YAML or JSON) with any of these options, method parameters and presets; "
                   "options given here override it. Each run keeps its resolved file in OUT/run-files/.")
@click.option("--dump-config", is_flag=True, help="Print the resolved run file (the --config file with the "
                                                   "options given here over it) and exit.")
def run(**options) -> None:
    """Edit a fresh copy of the model with each method, batch after batch, and score it at checkpoints."""
    from ..core.store import load_results
    from . import runfile
    from .api import execute

    options = runfile.merged(click.get_current_context(), options)
    if options["dump_config"]:
        click.echo(runfile.dump(runfile.from_options(options, run)), nl=False)
        return
    spec, results = execute(options)
    store = load_results(spec.out)
    try:
        for runner, outcome in results:
            _print_run(store, runner, outcome)
        errors = store.cells().set_index(["run_id", "method"])["error"]
    finally:
        store.close()
    for _, outcome in results:
        for label, status in outcome.statuses.items():
            if status != "done":
                error = errors.get((outcome.run_id, label))
                click.echo(f"{label}: {status}{f': {error}' if isinstance(error, str) and error else ''}", err=True)
    click.echo(f"results: {results[0][1].store_path}")
    sys.exit(0 if all(o.ok for _, o in results) else 1)


def _load_run_file(ctx: click.Context, path: Path | None) -> Path | None:
    """``--config FILE``: its options become the defaults of ``run`` (see harness/runfile.py)."""
    if path is not None:
        from . import runfile

        try:
            runfile.load_into(ctx, path)
        except (ValueError, FileNotFoundError) as exc:
            raise click.BadParameter(str(exc).removeprefix(f"--config {path}: "), param_hint=f"--config {path}") from None
    return path


def _unedited_line(baseline: dict, scored: int) -> str:
    """What the unedited model knows of the edits that are scored, saying which answer each figure is on."""
    parts = []
    if "pre_edit_accuracy" in baseline:
        generated = f", generated {baseline['pre_edit_gen_em']:.3f}" if "pre_edit_gen_em" in baseline else ""
        parts.append(f"true answers: teacher-forced {baseline['pre_edit_accuracy']:.3f}{generated}")
    if "pre_edit_efficacy_acc" in baseline:
        generated = f", generated {baseline['pre_edit_efficacy_gen_em']:.3f}" \
            if "pre_edit_efficacy_gen_em" in baseline else ""
        parts.append(f"new targets (before editing): teacher-forced {baseline['pre_edit_efficacy_acc']:.3f}{generated}")
    return f"unedited model on the {scored} scored edits: " + "; ".join(parts) if parts else ""


def _print_run(store, runner, outcome) -> None:
    from ..core.numerics import describe_numerics
    from ..reports.metrics import CAPABILITY_PREFIX
    from ..reports.summary import (
        MARKS_NOTE,
        board_frame,
        format_table,
        run_board,
        unedited_capability,
    )

    runs = store.runs().set_index("run_id")
    baseline = runs.loc[outcome.run_id, "baseline"] or {}
    click.echo("")
    sessions = store.sessions()
    numerics = sessions.loc[sessions["run_id"] == outcome.run_id, "numerics"]
    summaries = "; ".join(dict.fromkeys(describe_numerics(n) for n in numerics))
    click.echo(f"run {outcome.run_id}  task={runner.task.name}  model={runner.model_source}  edits={runner.edits}  "
               f"seed={runner.spec.seed}  device={runs.loc[outcome.run_id, 'device']}"
               + (f"  numerics={summaries}" if summaries else ""))
    click.echo(_unedited_line(baseline, len({p for scored in runner.positions.values() for p in scored})))
    board = run_board(runner.spec.out, outcome.run_id)
    click.echo(format_table(board_frame(board)))
    extra = board_frame(board, [m.name for m in runner.task.metrics])
    if not extra.empty:
        click.echo(f"\n{runner.task.name} metrics:")
        click.echo(format_table(extra))
    capability = board_frame(board, [c.key for c in board.columns if c.key.startswith(CAPABILITY_PREFIX)])
    if not capability.empty:
        unedited = unedited_capability(store, outcome.run_id)
        click.echo("\ngeneral capability (accuracy; the unedited model: "
                   f"{', '.join(f'{name} {value:.3f}' for name, value in sorted(unedited.items())) or '-'}):")
        click.echo(format_table(capability))
    if board.rows:
        click.echo(MARKS_NOTE)


@main.command("list")
@click.option("--methods", "only_methods", is_flag=True, help="Only methods.")
@click.option("--tasks", "only_tasks", is_flag=True, help="Only tasks.")
@click.option("--presets", "with_presets", is_flag=True,
              help="Each method's presets with their settings (those named after a model are picked by the model).")
def list_(only_methods: bool, only_tasks: bool, with_presets: bool) -> None:
    """Show the registered methods (with their presets) and tasks, one line each."""
    from ..core.architectures import ARCHITECTURES
    from ..methods import METHODS
    from ..tasks import TASKS
    from .evaluate import CORE_METRICS
    from .generated import GENERATED_METRICS

    models = {arch.name for arch in ARCHITECTURES}
    both = not (only_methods or only_tasks)
    if only_methods or both or with_presets:
        click.echo("methods:")
        for name, cls in METHODS.items():
            click.echo(f"  {name:<12} {cls.description}")
            named = [p for p in cls.presets if p not in models]
            by_model = [p for p in cls.presets if p in models]
            if with_presets:
                for preset, settings in cls.presets.items():
                    values = ", ".join(f"{k}={v}" for k, v in settings.items()) or "the defaults"
                    click.echo(f"  {'':<12} @{preset}{' (picked by the model)' if preset in models else ''}: {values}")
            elif cls.presets:
                click.echo(f"  {'':<12} presets: {', '.join(f'@{p}' for p in named) or '-'}"
                           f"{'; for ' + ', '.join(by_model) + ' (picked by the model)' if by_model else ''}")
    if only_tasks or (both and not with_presets):
        click.echo("tasks:")
        default = TASKS.default()
        for name, cls in TASKS.items():
            click.echo(f"  {name:<12} {cls.description}{' (default)' if name == default else ''}")
            click.echo(f"  {'':<12} metrics: {', '.join(m.name for m in (*CORE_METRICS, *GENERATED_METRICS, *cls.metrics))}")


def _add_subcommands() -> None:
    """Commands that live beside the code they drive (each module imports its heavy parts lazily)."""
    from ..reports.cli import publish, report
    from ..reports.export import export
    from .artifacts import artifacts_command
    from .bench import bench
    from .plan_command import plan
    from .selfcheck import selfcheck
    from .train import train

    for command in (train, report, publish, bench, export, plan, selfcheck, artifacts_command):
        main.add_command(command)


_add_subcommands()

if __name__ == "__main__":
    main()
