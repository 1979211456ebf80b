"""The Python API: what ``editbench run`` does, from a script or a notebook, and one method's edit
of a model you already hold.

``run`` takes the keys of a run file (:mod:`editbench.harness.runfile`), as a file or as keyword
arguments, resolves them through the ``run`` command's own options (the same defaults and checks
as the command line), runs, and returns the results store. ``edit`` needs no runner, store or task:
it edits the model in place with one method, batch after batch, as EasyEdit's ``BaseEditor.edit``
does, and returns the method (whose ``edited_parameters`` name what changed).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.records import EditRecord, Neighbour
from . import runfile

log = logging.getLogger(__name__)


def build_spec(options: Mapping[str, Any]):
    """The ``run`` command's resolved options -> (RunSpec, seeds, executor, Ray address)."""
    from ..core.configs import parse_overrides
    from .cli import _parse_editors, split_list, task_and_data
    from .runner import RunSpec

    options = dict(options)
    for own in runfile.OWN_OPTIONS:
        options.pop(own, None)
    executor, address, seeds = options.pop("executor"), options.pop("ray_address"), options.pop("seeds")
    task, data = task_and_data(options.pop("task"), options.pop("data"))
    spec = RunSpec(
        methods=split_list(options.pop("methods")),
        capability=split_list(options.pop("capability")),
        restart=split_list(options.pop("restart")),
        params=parse_overrides(options.pop("params")),
        editors=_parse_editors(options.pop("editors")),
        task=task, data=data, seed=seeds[0], gen_eval=options.pop("gen_eval") == "on",
        **options,
    )
    return spec, seeds, executor, address


def execute(options: Mapping[str, Any]):
    """Run what the ``run`` command's resolved ``options`` ask for, keeping the run file in the
    results folder first; returns (spec, [(runner, outcome)] per seed)."""
    from .cli import run as run_command
    from .executors import run_local, run_ray

    spec, seeds, executor, address = build_spec(options)
    runfile.store(spec.out, runfile.from_options(options, run_command))
    results = run_ray(spec, seeds, address) if executor == "ray" else run_local(spec, seeds)
    return spec, results


def resolve(config: str | Path | Mapping[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """A run file (a path or a mapping) with ``options`` over it, resolved through the ``run``
    command: every option of ``run`` with its value, as the command line would have it."""
    import click

    from .cli import run as run_command

    data = runfile.read_file(Path(config)) if isinstance(config, (str, Path)) else dict(config or {})
    where = f"--config {config}" if isinstance(config, (str, Path)) else "the run settings"
    base = runfile.to_options(data, run_command, where)
    over = runfile.to_options(options, run_command, "editbench.run()")
    for key in runfile.MERGED:  # the keyword arguments' settings over the file's, field by field
        if key in base and key in over:
            over[key] = (*base[key], *over[key])
    try:
        ctx = run_command.make_context("run", [], default_map={**base, **over})
    except click.ClickException as exc:  # a value the option refuses: the option's own message
        raise ValueError(exc.format_message()) from None
    return dict(ctx.params)


def run(config: str | Path | Mapping[str, Any] | None = None, **options: Any):
    """Run a benchmark as ``editbench run`` does and return its results store, opened for reading
    (a :class:`~editbench.core.store.ResultsStore`: ``summary()``, ``scores()``, ``runs()``... as
    pandas frames; close it, or use it in a ``with`` block).

    ``config`` is a run file or a mapping of its keys; keyword arguments override it, e.g.
    ``run(methods=["ft-m"], edits=20, out="results")``.
    """
    from ..core.store import load_results

    spec, _ = execute(resolve(config, **options))
    return load_results(spec.out)


def as_record(item: EditRecord | Mapping[str, Any], index: int) -> EditRecord:
    """A record given as an :class:`EditRecord` or as a mapping of its fields (the JSONL schema)."""
    if isinstance(item, EditRecord):
        return item
    if not isinstance(item, Mapping):
        raise ValueError(f"record {index}: expected an EditRecord or a mapping, got {type(item).__name__}")
    fields = dict(item)
    missing = [name for name in ("prompt", "subject", "target_new") if not fields.get(name)]
    if missing:
        raise ValueError(f"record {index}: needs {', '.join(missing)}")
    neighbours = fields.pop("neighbours", ())
    try:
        return EditRecord(uid=str(fields.pop("uid", index)), paraphrases=tuple(fields.pop("paraphrases", ())),
                          neighbours=tuple(n if isinstance(n, Neighbour) else Neighbour(n["prompt"], n["answer"])
                                           for n in neighbours), **fields)
    except (TypeError, KeyError) as exc:
        raise ValueError(f"record {index}: {exc}") from None


def _records_task(records: Sequence[EditRecord]):
    """A task that only holds the given records (no corpus: methods that need key statistics take
    their published corpus, or ``stats_corpus`` from ``params``)."""
    from ..core.task import Task, TaskOptions

    class GivenRecords(Task):
        name = "records"
        description = "the records given to editbench.edit()"

        def load(self, split: str) -> list[EditRecord]:
            return list(records)

    return GivenRecords(TaskOptions())


def edit(model, tokenizer, method: str, records: Sequence[EditRecord | Mapping[str, Any]], *,
         params: Mapping[str, Any] | None = None, batch_size: int | None = None, seed: int = 0,
         task=None, editor: str | Path | None = None, train_records: Sequence[EditRecord] = (),
         cache_dir: str | Path | None = None):
    """Edit ``model`` in place with ``method`` (``NAME`` or ``NAME@PRESET``) so that it holds every
    record, ``batch_size`` records at a time (default: all in one batch); returns the method. As in a
    run, a published model (GPT-2 XL, GPT-J, Llama 3 8B...) gets the settings the method's release
    published for it first, then the preset named, then ``params``.

    ``params`` sets the method's fields (``{"lr": 1e-3}``); ``editor`` is a trained editor's folder
    (``editbench train``), ``train_records`` what a learned method trains on when it has none;
    ``task`` (a Task) supplies a key-statistics corpus where a method wants one.
    """
    import torch

    from .. import methods as _registered  # noqa: F401  (registers the built-in methods)
    from ..core.architectures import recognise
    from ..core.cache import cache_root
    from ..core.method import EditContext, MethodRef
    from ..core.models import ModelLayout

    ref = MethodRef.parse(method)
    architecture = recognise(getattr(model, "config", None))  # a published model: its release's settings first
    config = ref.config({ref.label: {key: runfile.to_text(value) for key, value in (params or {}).items()}},
                        architecture)
    if architecture in ref.cls.presets:
        log.info("%s: taking the settings published for %s, under those given in params", ref.label, architecture)
    chosen = [as_record(item, i) for i, item in enumerate(records)]
    if not chosen:
        raise ValueError("editbench.edit(): give at least one record")
    size = batch_size or len(chosen)
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    ctx = EditContext(model=model, tokenizer=tokenizer, layout=ModelLayout.of(model), device=device,
                      cache_dir=Path(cache_dir) if cache_dir else cache_root(),
                      task=task if task is not None else _records_task(chosen), seed=seed,
                      generator=torch.Generator().manual_seed(seed), train_records=lambda: list(train_records),
                      trained_editor=Path(editor) if editor else None)
    editing = ref.cls(config, ctx)
    editing.prepare()
    for start in range(0, len(chosen), size):
        editing.apply(chosen[start:start + size])
    log.info("%s: %d edits applied in batches of %d", ref.label, len(chosen), size)
    return editing
