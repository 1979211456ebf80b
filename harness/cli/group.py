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

from ..running.allocator import tune_allocator
from ..running.heap import skip_final_collection
from ..running.logs import configure as configure_logging
from ..running.threads import mark_explicit as mark_threads_explicit


def _setup_logging(verbose: bool) -> None:
    configure_logging(logging.DEBUG if verbose else logging.INFO)


def _class(module: str, name: str) -> type | None:
    """An exception class of a module that is already loaded (an error from it cannot come
    otherwise), so explaining an error imports nothing heavy."""
    return getattr(sys.modules.get(module), name, None)


_OUT_OF_MEMORY = ("reduce --batch-size or --eval-sample, choose --dtype bfloat16 or a smaller "
                  "model, or free memory; rerun the same command to resume")


def _explain_os_error(exc: OSError) -> str:
    where = exc.filename or "a file"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (f"no space left writing {where} ({exc.strerror}); free disk space (or choose "
                "another --out or EDITBENCH_CACHE) and rerun the same command to resume")
    if exc.errno == errno.EROFS:
        return (f"{where} is on a read-only file system; choose a writable --out "
                "(and EDITBENCH_CACHE)")
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
    """One line for an error a user can fix, naming the file or setting and what would work;
    ``None`` for anything else (a bug, which keeps its traceback)."""
    message: str | None = None
    busy, store_error = (_class("editbench.core.cache", "Busy"),
                         _class("editbench.core.store", "StoreError"))
    snapshot_error = _class("editbench.core.snapshot", "SnapshotError")
    artifact_error = _class("editbench.core.artifacts", "ArtifactError")
    torch_oom = _class("torch.cuda", "OutOfMemoryError")
    if any(cls is not None and isinstance(exc, cls) for cls in (busy, store_error, snapshot_error,
                                                                  artifact_error)):
        message = str(exc)
    elif isinstance(exc, MemoryError) or (torch_oom is not None and isinstance(exc, torch_oom)) or (
            isinstance(exc, RuntimeError) and ("out of memory" in str(exc)
                                               or "can't allocate memory" in str(exc))):
        message = ("out of memory "
                   f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                   f"{_OUT_OF_MEMORY}")
    elif isinstance(exc, KeyError):
        message = str(exc).strip("'\"")
    elif isinstance(exc, OSError) and (exc.filename is not None
                                       or not isinstance(exc, FileNotFoundError)):
        # our own FileNotFoundErrors carry a whole sentence and no filename
        message = _explain_os_error(exc)
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
    ``editbench run --threads 1`` means ``editbench --threads 1 run``; everything else keeps its
    order."""
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


#: torch ends in a segmentation fault when asked for tens of thousands of threads (99,999 did on
#: 2 cores, 2026-12-05; 4,096 ran)
MAX_THREADS = 1024


@click.group(cls=EditbenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
@click.option("--debug", is_flag=True,
              help="Log debug messages and show the full traceback of any error.")
@click.option("--threads", type=click.IntRange(min=1, max=MAX_THREADS), default=None,
              help="CPU threads for torch, stored with each run (default: OMP_NUM_THREADS if set, "
                   "else one for a model under 2M parameters on the CPU, else torch's own "
                   "choice: one per core). Scores move slightly with it (README, 'Same numbers on "
                   "every machine'); it never depends on what else runs.")
@click.version_option(package_name="editbench")
def main(verbose: bool, debug: bool, threads: int | None) -> None:
    """editbench: benchmark lifelong knowledge editing of language models."""
    _setup_logging(verbose or debug)
    skip_final_collection()  # harness/running/heap.py: a second at the end of a run
    # harness/running/threads.py
    mark_threads_explicit(threads is not None or "OMP_NUM_THREADS" in os.environ)
    if click.get_current_context().invoked_subcommand in COMPUTING:
        tune_allocator()  # harness/running/allocator.py: a tenth of a run's CPU was the kernel's
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    elif click.get_current_context().invoked_subcommand in COMPUTING and "torch" not in sys.modules:
        waiting = wait_policy(other_editbench_processes(), os.environ)
        if waiting:  # read by OpenMP when torch is first imported; it changes speed, never a score
            os.environ.update(waiting)
            logging.getLogger(__name__).info(
                "other editbench processes run here: torch's threads sleep when idle instead of "
                "spinning (OMP_WAIT_POLICY=PASSIVE); --threads N shares the cores out (scores move "
                "slightly with it)")


#: the commands that run models (the others need no thread setting, and need not look for other
#: processes)
COMPUTING = ("run", "train", "bench")


def other_editbench_processes() -> int:
    """How many other editbench commands run on this machine (a sweep, a test suite beside a
    run)."""
    import psutil

    own = {os.getpid(), os.getppid()}
    count = 0
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info["pid"] in own or not cmdline:
            continue
        if any(Path(part).name == "editbench" or part.startswith("editbench.")
               for part in cmdline[:3]):
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


@main.command("list")
@click.option("--methods", "only_methods", is_flag=True, help="Only methods.")
@click.option("--tasks", "only_tasks", is_flag=True, help="Only tasks.")
@click.option("--presets", "with_presets", is_flag=True,
              help="Each method's presets with their settings (those named after a model are "
                   "picked by the model).")
@click.option("--protocols", "only_protocols", is_flag=True,
              help="Only the protocols (editbench run --protocol NAME): what each fixes, its "
                   "source, and how many published numbers it carries.")
def list_(only_methods: bool, only_tasks: bool, with_presets: bool,
          only_protocols: bool) -> None:
    """Show the registered methods (with their presets), tasks and protocols, one line each."""
    if only_protocols:
        _list_protocols()
        return
    from ...core.architectures import ARCHITECTURES
    from ...methods import METHODS
    from ...tasks import TASKS
    from ..evaluation.generated import GENERATED_METRICS
    from ..evaluation.teacher_forced import CORE_METRICS

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
                    source = cls.preset_checkpoints.get(preset)
                    picked = ("" if preset not in models else " (picked by the model)"
                              if not source else f" (picked by the model; tuned for {source})")
                    click.echo(f"  {'':<12} @{preset}{picked}: {values}")
            elif cls.presets:
                click.echo(f"  {'':<12} presets: {', '.join(f'@{p}' for p in named) or '-'}"
                           f"""{'; for ' + ', '.join(by_model) + ' (picked by the model)'
                                if by_model else ''}""")
    if only_tasks or (both and not with_presets):
        click.echo("tasks:")
        default = TASKS.default()
        for name, cls in TASKS.items():
            click.echo(f"  {name:<12} {cls.description}{' (default)' if name == default else ''}")
            click.echo(
                f"  {'':<12} metrics: "
                f"{', '.join(m.name for m in (*CORE_METRICS, *GENERATED_METRICS, *cls.metrics))}")


def _list_protocols() -> None:
    import shutil
    import textwrap

    from ...core.protocol import PROTOCOLS

    width = max(60, min(100, shutil.get_terminal_size((100, 24)).columns))

    def line(text: str, first: str = "") -> None:
        click.echo(textwrap.fill(text, width, initial_indent=f"  {first:<10} ",
                                 subsequent_indent=" " * 13))

    click.echo("protocols:")
    for card in PROTOCOLS.values():
        line(card.title, card.name)
        line(card.describe().split(": ", 1)[1])
        if card.method_params:
            line("method settings: " + "; ".join(
                f"{m}: " + ", ".join(f"{k}={v}" for k, v in p.items())
                for m, p in card.method_params.items()))
        if card.edits:
            line(f"default --edits {card.edits}"
                 + (f"; published on {', '.join(card.tasks)}" if card.tasks else ""))
        if card.citation:
            line(f"source: {card.citation}")
        line(f"published numbers: {len(card.published) or 'none transcribed yet'}")


def _add_subcommands() -> None:
    """The other commands, one module each (each imports its heavy parts inside the command)."""
    from ...reports.cli import claims, compare, publish, report, samples, submit, validate
    from ...reports.export import export
    from .artifacts import artifacts_command
    from .bench import bench
    from .plan import plan
    from .run import run
    from .selfcheck import selfcheck
    from .train import train

    for command in (run, train, report, publish, compare, samples, submit, validate, claims, bench,
                    export, plan, selfcheck, artifacts_command):
        main.add_command(command)


_add_subcommands()

if __name__ == "__main__":
    main()
