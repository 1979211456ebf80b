"""The Python API: what ``editbench run`` does, from a script or a notebook, and one method's edit
of a model you already hold.

``run`` takes the settings of a run (:class:`~editbench.harness.plan.settings.RunSpec`), as a
run file, a mapping or keyword arguments (the same names, defaults and checks as the command
line, which is generated from the same fields), resolves them into a plan per seed, runs, and
returns the results store. ``plan`` stops after resolving. ``edit`` needs no runner, store or
task: it edits the model in place with one method, batch after batch, as EasyEdit's
``BaseEditor.edit`` does, and returns the method (whose ``edited_parameters`` name what changed).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.records import EditRecord, Neighbour
from .plan import runfile
from .plan.settings import RunSpec, layered, to_text

log = logging.getLogger(__name__)


def settings(config: str | Path | Mapping[str, Any] | None = None, **options: Any) -> RunSpec:
    """A run file (a path) or a mapping of its keys, with ``options`` over it (``params`` and
    ``editors`` merge, field by field), as a checked :class:`RunSpec`."""
    layers = []
    if isinstance(config, (str, Path)):
        layers.append((runfile.read_file(Path(config)), f"--config {config}"))
    elif config is not None:
        layers.append((dict(config), "the run settings"))
    layers.append((options, "editbench.run()"))
    return RunSpec(**layered(layers))


def plan(config: str | Path | Mapping[str, Any] | None = None, **options: Any):
    """The resolved plan of each seed's run (:class:`~editbench.harness.plan.resolve.RunPlan`),
    without loading weights or writing anything."""
    from .plan.resolve import resolve_sweep

    return resolve_sweep(settings(config, **options))


def execute(spec: RunSpec, side_by_side: bool = False):
    """Run ``spec`` (each seed; here, one cell at a time or ``jobs`` at once, or on Ray), keeping
    its run file in the results folder first; returns [(runner, outcome)] per seed.

    ``side_by_side``: whether ``jobs`` left unset may default to several (the command line's
    choice). From Python it stays one unless given: worker processes start fresh interpreters,
    which import the calling script again, and a script without an ``if __name__ ==
    "__main__":`` guard (or a task class defined in it) would then fail in every worker."""
    from .running import worker_start

    # first, before this process imports torch: the server's imports overlap them and the resolving
    if _may_run_side_by_side(spec, side_by_side):
        worker_start.start_early()
    from .running.executors import run_local, run_ray
    from .running.side_by_side import default_jobs, run_parallel

    plans = resolved(spec)
    runfile.store(spec.out, spec.to_mapping())
    if spec.executor == "ray":
        return run_ray(plans, spec.ray_address)
    jobs = spec.jobs if spec.jobs is not None else default_jobs(plans) if side_by_side else 1
    if jobs > 1 and sum(len(plan.methods) for plan in plans) > 1:
        return run_parallel(plans, jobs)
    return run_local(plans)


def resolved(spec: RunSpec):
    """The plan of each seed; where the task builds its own model on first use and has not yet,
    the model is built first and the run resolved again, so that the plan reads the model's size
    from its config as a run with the model cached does: its memory, and how many cells run side
    by side (a cold ``--task pocket-lifelong`` ran its 36 cells one at a time on one of two
    cores). The run builds that model at its start anyway (``Runner.prepare``); not for Ray,
    whose workers may be other machines with caches of their own."""
    from .plan import resolve

    plans = resolve.resolve_sweep(spec)
    if spec.model is None and spec.executor != "ray" and plans and plans[0].model_shape is None:
        built = plans[0].task.default_model()
        if built is not None and Path(built).exists():
            plans = resolve.resolve_sweep(spec)
    return plans


def _may_run_side_by_side(spec: RunSpec, side_by_side: bool) -> bool:
    """Whether ``spec`` may run cells in ``--jobs`` workers, judged before resolving it (without
    the model's size, which :func:`~.running.side_by_side.default_jobs` also reads): several
    cells, the local executor, and several jobs asked for or left to a choice that could give
    them."""
    from .running import threads

    cells = (len(spec.methods) if spec.methods else 2) * max(1, len(spec.seed))
    if spec.executor != "local" or cells < 2:
        return False
    if spec.jobs is not None:
        return spec.jobs > 1
    # "auto" may turn out to be a GPU (then one job): the server costs another core a few seconds
    return (side_by_side and spec.device in ("auto", "cpu") and not threads.chosen_by_user()
            and threads.usable_cores() > 1)


def run(config: str | Path | Mapping[str, Any] | None = None, **options: Any):
    """Run a benchmark as ``editbench run`` does and return its results store, opened for reading
    (a :class:`~editbench.core.store.ResultsStore`: ``summary()``, ``scores()``, ``runs()``... as
    pandas frames; close it, or use it in a ``with`` block).

    ``config`` is a run file or a mapping of its keys; keyword arguments override it, e.g.
    ``run(methods=["ft-m"], edits=20, out="results")``. Cells run one after another unless
    ``jobs=N`` is given (then call it under ``if __name__ == "__main__":``; see :func:`execute`).
    """
    from ..core.store import load_results

    spec = settings(config, **options)
    execute(spec)
    return load_results(spec.out)


def as_record(item: EditRecord | Mapping[str, Any], index: int) -> EditRecord:
    """A record given as an :class:`EditRecord` or as a mapping of its fields (the JSONL schema)."""
    if isinstance(item, EditRecord):
        return item
    if not isinstance(item, Mapping):
        raise ValueError(f"record {index}: expected an EditRecord or a mapping, "
                         f"got {type(item).__name__}")
    fields = dict(item)
    missing = [name for name in ("prompt", "subject", "target_new") if not fields.get(name)]
    if missing:
        raise ValueError(f"record {index}: needs {', '.join(missing)}")
    neighbours = fields.pop("neighbours", ())
    try:
        return EditRecord(uid=str(fields.pop("uid", index)),
                          paraphrases=tuple(fields.pop("paraphrases", ())),
                          neighbours=tuple(n if isinstance(n, Neighbour)
                                           else Neighbour(n["prompt"], n["answer"])
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
         cache_dir: str | Path | None = None, prompt_format: str = "raw"):
    """Edit ``model`` in place with ``method`` (``NAME`` or ``NAME@PRESET``) so that it holds every
    record, ``batch_size`` records at a time (default: all in one batch); returns the method. As in
    a run, a published model (GPT-2 XL, GPT-J, Llama 3 8B...) gets the settings the method's release
    published for it first, then the preset named, then ``params``.

    ``params`` sets the method's fields (``{"lr": 1e-3}``); ``editor`` is a trained editor's folder
    (``editbench train``), ``train_records`` what a learned method trains on when it has none;
    ``task`` (a Task) supplies a key-statistics corpus where a method wants one;
    ``prompt_format`` shows prompts as ``--prompt-format`` does (``fewshot`` takes its examples
    from ``train_records``).
    """
    import torch

    from .. import methods as _registered  # noqa: F401  (registers the built-in methods)
    from ..core.architectures import recognise
    from ..core.cache import cache_root
    from ..core.method import EditContext, MethodRef, picked_preset_note
    from ..core.models import ModelLayout
    from ..core.prompts import PromptFormat, fewshot_examples

    ref = MethodRef.parse(method)
    # a published model: its release's settings first
    architecture = recognise(getattr(model, "config", None))
    config = ref.config({ref.label: {key: to_text(value) for key, value in (params or {}).items()}},
                        architecture)
    if architecture in ref.cls.presets:
        log.info("%s, under those given in params",
                 picked_preset_note(ref.label, ref.name, architecture,
                                    ref.cls.preset_checkpoints.get(architecture)))
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
                      generator=torch.Generator().manual_seed(seed),
                      train_records=lambda: list(train_records),
                      trained_editor=Path(editor) if editor else None,
                      prompt_format=PromptFormat(prompt_format, fewshot_examples(train_records)))
    editing = ref.cls(config, ctx)
    editing.prepare()
    for start in range(0, len(chosen), size):
        editing.apply(chosen[start:start + size])
    log.info("%s: %d edits applied in batches of %d", ref.label, len(chosen), size)
    return editing
