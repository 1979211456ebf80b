"""Resolving a run: :func:`resolve` turns a :class:`~.settings.RunSpec` into a :class:`RunPlan`.

The plan is everything the run will do, known before it does any of it: the task and its records
in their seeded order, the batches and checkpoints, the sample scored at each checkpoint, each
method's resolved settings (the release's settings for a recognised model first, then the preset
named, then ``--param``), the scoring backend, each method's planned memory and time per phase
(``estimate.py``), and the run's identity (its config and id). Resolving reads configs, data and
tokenizers, never weights, and trains nothing: the pocket world's model is named, not built.
The runner, the preflight check, the Ray executor, the bench, ``editbench run --dry-run`` and the
Python API all take a plan.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import mean
from typing import TYPE_CHECKING

from ..._version import __version__
from ...core.configs import build_config, config_dict, config_hash
from ...core.prompts import RAW, PromptFormat, fewshot_examples, format_warning
from ...core.records import EditRecord, check_disjoint, dataset_hash
from ...core.schedule import batch_bounds, checkpoint_ladder, eval_positions
from .protocol import apply_protocol
from .settings import RunSpec

if TYPE_CHECKING:
    import torch

    from ...core.costs import ModelShape, RunShape
    from ...core.method import EditMethod, MethodConfig, MethodRef
    from ...core.protocol import Protocol
    from ...core.task import Task
    from ..evaluation.capability import CapabilitySettings
    from .estimate import MethodEstimate

log = logging.getLogger(__name__)

#: what a plan's ``format`` says, so a stored plan can be read back by a later editbench
PLAN_FORMAT = 1


@dataclass(frozen=True)
class MethodSetup:
    """One method as the run will build it: its class, its resolved settings and their hash."""

    ref: MethodRef  # ref.label is what the store and the reports call it: "ft-m", "rledit@paper"
    cls: type[EditMethod]
    config: MethodConfig
    config_hash: str
    editor: Path | None = None  # a trained editor given with --editor

    @property
    def label(self) -> str:
        return self.ref.label


@dataclass(frozen=True)
class RunPlan:
    """One seed's run, resolved. Protocols and provenance add their fields here."""

    #: the settings, for this plan's seed alone, with the protocol's where the user gave none
    spec: RunSpec
    seed: int
    task: Task
    #: the records edited, in their seeded stream order (``records[i]`` is the i-th edit)
    records: tuple[EditRecord, ...]
    checkpoints: tuple[int, ...]
    batches: tuple[tuple[int, int], ...]  # [start, stop) per step; never across a checkpoint
    #: checkpoint -> the stream positions scored there (all edits so far, or a seeded sample)
    positions: Mapping[int, list[int]]
    methods: tuple[MethodSetup, ...]
    model_source: str
    architecture: str | None
    device: torch.device
    dtype: torch.dtype
    backend: str  # "hf" or "vllm"
    cache_dir: Path
    capability: CapabilitySettings | None
    capability_at: frozenset[int]
    #: each method's cost per phase and what it lacks (empty when the model's config is unreadable)
    estimates: tuple[MethodEstimate, ...]
    #: bytes of the device the edited model may use (beside the vLLM engine's share)
    capacity: int
    run_config: Mapping[str, object]
    run_id: str
    dataset_hash: str
    #: how the run is turned and scored: the card named, with the user's changes to it
    protocol: Protocol
    notes: tuple[str, ...] = field(default=())  # decisions the resolve step took, for the log
    #: the model's meta-device twin and the run's sizes the estimates were made from (None where
    #: the model's config cannot be read)
    model_shape: ModelShape | None = None
    run_shape: RunShape | None = None
    #: how prompts are shown to the model (``--prompt-format``), with ``fewshot``'s examples
    prompt_format: PromptFormat = RAW

    @property
    def edits(self) -> int:
        return len(self.records)

    def planned_peak(self, label: str) -> int | None:
        """The planned peak bytes of a method's largest phase (Ray sizes a cell's GPUs by it)."""
        for item in self.estimates:
            largest = item.largest_phase(self.device.type == "cpu") if item.label == label else None
            if largest is not None:
                return largest[1]
        return None

    def restarts(self, setup: MethodSetup) -> bool:
        """Whether ``--restart`` names this method (by label, or by name for all its presets)."""
        return setup.label in self.spec.restart or setup.ref.name in self.spec.restart

    def train_records(self) -> list[EditRecord]:
        """The task's train split, checked against this run's edits (:func:`train_split`)."""
        return train_split(self.task, self.records)

    def describe(self) -> dict[str, object]:
        """The plan as plain data (``editbench run --dry-run``, and a record of what was run)."""
        return {
            "format": PLAN_FORMAT, "editbench": __version__, "run_id": self.run_id,
            "seed": self.seed, "task": self.task.name, "model": self.model_source,
            "protocol": self.protocol.record(),
            "architecture": self.architecture, "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."), "backend": self.backend,
            "edits": self.edits, "batches": len(self.batches),
            "checkpoints": list(self.checkpoints),
            "scored_per_checkpoint": {n: len(p) for n, p in self.positions.items()},
            "first_edits": [r.uid for r in self.records[:5]],
            "methods": {m.label: {"settings": config_dict(m.config), "config_hash": m.config_hash,
                                  **({"editor": str(m.editor)} if m.editor else {})}
                        for m in self.methods},
            "memory": {item.label: item.describe(self.device.type == "cpu")
                       for item in self.estimates},
            "capacity_bytes": self.capacity, "run_config": dict(self.run_config),
            "notes": list(self.notes),
        }


# -- the pieces --------------------------------------------------------------------------------
def train_split(task: Task, records: Sequence[EditRecord]) -> list[EditRecord]:
    """The task's train split, refused if it shares any record with the edits of the run."""
    train = task.load("train")
    check_disjoint(train, records, task.name, "the evaluated edits")
    return train


def resolve_task(spec: RunSpec) -> Task:
    from ...core.task import TaskOptions
    from ...tasks import TASKS

    name = spec.task or TASKS.default()
    cls = TASKS[name]
    if spec.data is not None and not cls.reads_data:
        raise ValueError(f"--data {spec.data}: the task {name} makes its own records and reads "
                         "no data file; choose a task that reads one (editbench list --tasks) or "
                         "leave --data out")
    options = TaskOptions(data=spec.data, split=spec.split, limit=spec.limit,
                          cache_dir=spec.cache_dir, lenient=spec.lenient)
    config = build_config(cls.Config, spec.params.get(name, {}), owner=f"task {name}")
    return cls(options, config)


def default_methods(say_why: bool = True) -> tuple[str, ...]:
    """Every registered method but those that say why the default run should leave them out, with
    a ``left_out_of_default_run()`` classmethod (``methods/lora_ft.py``: an optional library that
    is not installed, or a cost the default run's budget has no room for); the reason is logged,
    so a plain install's default run still starts and stays short. Whether
    one needs the network is the run's to say, not the method's (MEMIT's statistics come from the
    task's text where it has some, from the hub otherwise), and the preflight names what a method
    lacks (``requirements``)."""
    from ...methods import METHODS

    chosen = []
    for name, cls in METHODS.items():
        reason = getattr(cls, "left_out_of_default_run", lambda: None)()
        if reason:
            if say_why:
                log.info("left out of the default methods: %s", reason)
        else:
            chosen.append(name)
    return tuple(chosen)


def method_setups(spec: RunSpec, architecture: str | None = None,
                  notes: list[str] | None = None,
                  labels: Sequence[str] = ()) -> tuple[MethodSetup, ...]:
    """Each method of the run (``labels``, else the spec's, else the default ones) with its
    settings; on a published model (``architecture``) its release's settings for it come first
    (``MethodRef.config``), which is noted."""
    from ... import methods as _registered  # noqa: F401  (registers the built-in methods)
    from ...core.method import MethodRef, is_trainable, picked_preset_note

    setups = []
    for label in labels or spec.methods or default_methods():
        ref = MethodRef.parse(label)
        config = ref.config(spec.params, architecture)
        if architecture in ref.cls.presets:
            note = (picked_preset_note(ref.label, ref.name, architecture,
                                       ref.cls.preset_checkpoints.get(architecture))
                    + ", under anything set by hand")
            log.info("%s", note)
            if notes is not None:
                notes.append(note)
        editor = spec.editors.get(ref.label) or spec.editors.get(ref.name)
        if editor is not None and not is_trainable(ref.cls):
            raise ValueError(f"--editor {ref.label}={editor}: {ref.name} trains no editor, so "
                             "there is nothing to load; leave --editor out for it")
        if editor is not None and not editor.exists():
            raise FileNotFoundError(f"--editor {ref.label}={editor}: no such folder")
        digest = config_hash(ref.name, config_dict(config), str(editor) if editor else None)
        setups.append(MethodSetup(ref, ref.cls, config, digest, editor))
    labels = [s.label for s in setups]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--methods lists a method twice: {','.join(labels)}")
    named = {s.label for s in setups} | {s.ref.name for s in setups}
    unknown = sorted(set(spec.editors) - named)
    if unknown:
        raise ValueError(f"--editor names {unknown[0]!r}, which is not among --methods")
    return tuple(setups)


def check_param_owners(spec: RunSpec, task: Task, setups: Sequence[MethodSetup]) -> None:
    """A ``--param`` for a method or task that is not in the run would be silently ignored."""
    owners = {task.name} | {s.label for s in setups} | {s.ref.name for s in setups}
    stray = sorted(set(spec.params) - owners)
    if stray:
        raise ValueError(f"--param {stray[0]}.…: {stray[0]!r} is neither the task nor a method of "
                         f"this run (selected: {', '.join(sorted(owners))})")


def check_restart(spec: RunSpec, setups: Sequence[MethodSetup]) -> None:
    """``--restart`` must name methods of this run (by label, or by name for all its presets)."""
    named = {s.label for s in setups} | {s.ref.name for s in setups}
    stray = [label for label in spec.restart if label not in named]
    if stray:
        raise ValueError(f"--restart {stray[0]}: not a method of this run (selected: "
                         f"{', '.join(s.label for s in setups)})")


def stream_order(records: Sequence[EditRecord], seed: int) -> list[int]:
    """The seeded order in which records are edited. Records of one ``group`` stay consecutive and
    in their file order (an MQuAKE case's questions, on its last record, are scored after all of
    its edits); without groups every record is its own unit, and the shuffle of the units is the
    plain shuffle every earlier run used (a shuffle's permutation depends only on the length)."""
    units: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        units.setdefault(record.group or f"\0{index}", []).append(index)
    grouped = list(units.values())
    random.Random(seed).shuffle(grouped)
    return [index for unit in grouped for index in unit]


def choose_backend(asked: str, device: torch.device) -> str:
    """``--probe-backend``: auto is vLLM when it is installed and usable on a GPU, else HF."""
    from ...core.probe_vllm import (
        installed_vllm_version,
        vllm_available,
        vllm_unavailable_reason,
    )

    if asked == "hf" or (asked == "auto" and device.type != "cuda"):
        return "hf"
    if asked == "auto" and not vllm_available():
        if installed_vllm_version():
            log.warning("%s; scoring with the Hugging Face backend", vllm_unavailable_reason())
        return "hf"
    reason = vllm_unavailable_reason()
    if reason is not None:
        raise ValueError(reason)
    return "vllm"


def check_save_model(n_edits: int | None, checkpoints: Sequence[int]) -> None:
    """The model is saved as the checkpoint is stored, so N must be one of the run's checkpoints."""
    if n_edits is not None and n_edits not in checkpoints:
        raise ValueError(f"--save-model {n_edits}: the model is saved at a checkpoint; choose "
                         f"among {','.join(map(str, checkpoints))} (or set --checkpoints)")


def _capability(spec: RunSpec, seed: int, edits: int, checkpoints: Sequence[int]):
    if not spec.capability:
        return None, frozenset()
    from ..evaluation.capability import CapabilitySettings

    settings = CapabilitySettings(spec.capability, spec.capability_data, spec.capability_limit,
                                  seed=seed)
    at = (set(checkpoint_ladder(spec.capability_at, edits, 1, "--capability-at"))
          if spec.capability_at else {edits})
    if not at <= set(checkpoints):
        raise ValueError(f"--capability-at {','.join(map(str, spec.capability_at))}: the sets are "
                         f"asked at checkpoints; choose among {','.join(map(str, checkpoints))}")
    return settings, frozenset(at)


def _model_tokenizer(source: str, trust_remote_code: bool, built_later: bool):
    """The model's tokenizer; None for a bare config.json, or a task's own model that the run will
    build (``built_later``)."""
    from ...core.models import load_tokenizer

    if Path(source).is_file() or (built_later and not Path(source).exists()):
        return None
    return load_tokenizer(source, trust_remote_code)  # a model that cannot be found stops here


def _tokens_per_record(tokenizer, records: Sequence[EditRecord], shown: PromptFormat) -> int:
    """Mean prompt-and-answer tokens of a record as the model is shown them, by the model's
    tokenizer; without one, about one token per four characters."""
    if tokenizer is None:
        texts = [f"{r.prompt} {r.target_new}" for r in records[:200]] or [""]
        return max(1, round(mean(len(t) for t in texts) / 4))
    texts = [f"{shown.render(r.prompt, tokenizer)}{shown.separator}{r.target_new}"
             for r in records[:200]] or [""]
    specials = not shown.own_special_tokens
    return max(1, round(mean(len(tokenizer(t, add_special_tokens=specials)["input_ids"])
                             for t in texts)))


def _scored_texts(record: EditRecord):
    """(field, prompt with its answer) of every pair a record has scored."""
    yield "prompt", record.prompt, record.target_new
    for i, text in enumerate(record.paraphrases):
        yield f"paraphrases[{i}]", text, record.target_new
    for name, pairs in (("neighbours", record.neighbours), *record.locality.items(),
                        ("portability", record.portability)):
        for i, pair in enumerate(pairs):
            yield f"{name}[{i}]", pair.prompt, pair.answer


def check_context(records: Sequence[EditRecord], tokenizer, shown: PromptFormat, source: str,
                  trust_remote_code: bool) -> None:
    """Refuse, before any weights are read, a record whose prompt and answer are longer than the
    model's context: it would fail or be cut in the middle of a run (a 9.6 MB prompt ran at 9 GB
    for minutes). A token covers at least a quarter of a character (a UTF-8 byte), so a text
    that short enough is passed without tokenizing it, and a long one is tokenized only as far as
    the limit needs."""
    if tokenizer is None:
        return
    from .estimate import read_config

    config = read_config(source, trust_remote_code)
    limit = next((value for key in ("max_position_embeddings", "n_positions", "seq_length")
                  if isinstance(value := getattr(config, key, None), int) and value > 0), None)
    if limit is None:
        return
    specials = not shown.own_special_tokens

    def tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=specials)["input_ids"])

    overhead = tokens(shown.render("", tokenizer) + shown.separator) + 2
    for record in records:
        for field_name, prompt, answer in _scored_texts(record):
            text = f"{prompt}{shown.separator if field_name == 'prompt' else ' '}{answer}"
            if 4 * len(text) + overhead <= limit:
                continue
            # a prefix long enough to pass the limit settles it without the whole text
            cut = text[: 64 * limit]
            partial = len(cut) < len(text)
            count = tokens(shown.render(cut, tokenizer))
            if partial and count <= limit:
                count, partial = tokens(shown.render(text, tokenizer)), False
            if count > limit:
                raise ValueError(
                    f"record {record.uid}: field {field_name!r} with its answer is "
                    f"{'at least ' if partial else ''}{count:,} tokens, beyond the context of "
                    f"--model {source} ({limit:,} tokens); shorten or drop the record")


def _prompt_format(spec: RunSpec, task: Task, records: Sequence[EditRecord], tokenizer,
                   warn: bool, notes: list[str]) -> PromptFormat:
    """``--prompt-format`` as the run applies it: refused for a model without the chat template it
    asks for, a warning (once per sweep: ``warn``) for a model with one run raw, and ``fewshot``'s
    examples drawn from the task's train split (``core/prompts.py``)."""
    message = format_warning(spec.prompt_format, tokenizer) if tokenizer is not None else None
    if message is not None and warn:
        log.warning("%s", message)
    if message is not None:
        notes.append(message)
    if spec.prompt_format != "fewshot":
        return PromptFormat(spec.prompt_format)
    try:
        train = train_split(task, records)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        log.info("fewshot: the built-in examples, the %s task's train split being unusable (%s)",
                 task.name, exc)
        train = []
    return PromptFormat("fewshot", fewshot_examples(train))


def _run_shape(spec: RunSpec, records: Sequence[EditRecord], positions: Mapping[int, list[int]],
               tokens: int, device_bytes: int) -> RunShape:
    from ...core.costs import RunShape

    sample = records[:200]
    pairs = mean(1 + len(r.paraphrases) + len(r.neighbours) for r in sample) if sample else 1
    return RunShape(edits=len(records), batch_size=spec.batch_size,
                    scored_records=sum(len(p) for p in positions.values()),
                    pairs_per_record=round(pairs), tokens_per_record=tokens,
                    generated=spec.gen_eval, gen_max_tokens=spec.gen_max_tokens,
                    device_bytes=device_bytes, master_copies=spec.master_copy)


def _estimate(spec: RunSpec, task: Task, records: Sequence[EditRecord],
              positions: Mapping[int, list[int]], source: str, device: torch.device,
              dtype: torch.dtype, backend: str, setups: Sequence[MethodSetup],
              train_records: Callable[[], list], notes: list[str], tokenizer=None,
              shown: PromptFormat = RAW,
              ) -> tuple[ModelShape | None, RunShape | None, tuple[MethodEstimate, ...], str, int]:
    """Each method's cost on the model's meta-device twin and what it lacks; and the backend
    again: vLLM chosen by default gives way to HF when the plan does not fit beside it."""
    from .estimate import device_memory, estimate_methods, model_shape

    tokens = _tokens_per_record(tokenizer, records, shown)
    try:
        shape = model_shape(source, str(dtype).removeprefix("torch."), spec.trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:  # loading the model explains it, with the fix
        log.debug("no estimates: the model's config cannot be read (%s)", exc)
        return None, None, (), backend, device_memory(device)
    whole = device_memory(device)
    share = 1 - spec.vllm_memory if backend == "vllm" else 1.0  # the vLLM engine takes its share
    run = _run_shape(spec, records, positions, tokens, int(whole * share))
    estimates = estimate_methods(shape, run, [s.label for s in setups], spec.params, task=task,
                                 train_records=train_records, editors=spec.editors)
    if share < 1 and spec.probe_backend == "auto" and not all(e.fits(run) for e in estimates):
        note = ("scoring with the Hugging Face backend: beside vLLM's "
                f"{100 * spec.vllm_memory:.0f}% of the GPU (--vllm-memory) the plan does not fit")
        log.info("%s", note)
        notes.append(note)
        return shape, replace(run, device_bytes=whole), tuple(estimates), "hf", whole
    return shape, run, tuple(estimates), backend, int(whole * share)


# -- sizing the task for --edits ---------------------------------------------------------------
def _sized(spec: RunSpec, task: Task, first_seed: bool,
           notes: list[str]) -> tuple[RunSpec, Task]:
    """``spec`` and its task with enough records for ``--edits``: a task that makes its records
    (the pocket world) and was given no settings is sized for the count (``Task.sized_for``), so
    that ``editbench run --edits 20000`` runs as written; settings the user gave are kept as they
    are (then :func:`_how_to_size` says what would do). The larger world is another world: its
    model and the trained editors are trained for it on first use and cached."""
    edits = spec.edits
    if (edits is None or spec.params.get(task.name) or spec.data is not None
            or (spec.limit is not None and spec.limit < edits)):
        return spec, task
    sized = task.sized_for(edits)
    if not sized or edits <= len(task.records()):
        return spec, task
    spec = replace(spec, params={**spec.params, task.name: dict(sized)})
    bigger = resolve_task(spec)
    settings = " ".join(f"--param {task.name}.{k}={v}" for k, v in sized.items())
    note = (f"--edits {edits}: the {task.name} task's {spec.split} split has "
            f"{len(task.records())} records, so the run uses a larger world ({settings}, "
            f"{len(bigger.records())} records); "
            + ("its model and any trained editor are trained for it on first use and cached"
               if spec.model is None else "the model named is used as it is"))
    if first_seed:
        log.warning("%s", note)
    notes.append(note)
    return spec, bigger


def _how_to_size(spec: RunSpec, task: Task, edits: int) -> str:
    """What would give ``--edits`` enough records, for the error that says there are too few."""
    if spec.limit is not None and spec.limit < edits:
        return f" under --limit {spec.limit}; raise --limit or lower --edits"
    sized = task.sized_for(edits)
    settings = " ".join(f"--param {task.name}.{k}={v}" for k, v in sized.items())
    if sized and spec.params.get(task.name) == sized:  # sized already: another split is smaller
        return f" even with {settings}; lower --edits"
    if sized:
        return f" with the settings given; {settings} makes enough"
    return "; lower --edits, or give the task more data"


# -- the step ----------------------------------------------------------------------------------
def resolve(spec: RunSpec, seed: int | None = None) -> RunPlan:
    """The plan of ``spec``'s run under ``seed`` (default: its only seed). Reads configs, data and
    tokenizers; loads no weights, trains nothing, writes nothing."""
    from ...core.architectures import architecture_of
    from ...core.cache import cache_root
    from ...core.models import resolve_device, resolve_dtype

    if seed is None:
        if len(spec.seed) != 1:
            raise ValueError(f"--seed {','.join(map(str, spec.seed))}: several seeds make several "
                             "runs; resolve_sweep gives one plan per seed")
        seed = spec.seed[0]
    first_seed = seed == spec.seed[0]
    # the default methods, and why some are left out, said once (not once per read of them)
    labels = spec.methods or default_methods(say_why=first_seed)
    spec, protocol = apply_protocol(spec.with_seed(seed), labels)
    notes: list[str] = []
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    task = resolve_task(spec)
    spec, task = _sized(spec, task, first_seed, notes)
    setups = method_setups(spec, labels=labels)  # checked before any data or model is read
    check_param_owners(spec, task, setups)
    check_restart(spec, setups)
    available = task.records()
    edits = spec.edits
    if edits is None:  # the protocol's edit count, else the task's, up to the records there are
        wanted = protocol.edits or task.default_edits()
        edits = min(wanted, len(available))
        if protocol.edits and edits < wanted:
            note = (f"{edits} edits: the {protocol.name} protocol edits {wanted}, but the "
                    f"{task.name} task's {spec.split} split has {len(available)} records")
            log.warning("%s", note)
            notes.append(note)
    if edits > len(available):
        raise ValueError(f"--edits {edits}: the {task.name} task's {spec.split} split has only "
                         f"{len(available)} records{_how_to_size(spec, task, edits)}")
    order = stream_order(available, seed)  # one seeded order, shared by every method
    records = tuple(available[i] for i in order[:edits])
    chosen = spec.checkpoints or ((edits,) if protocol.scoring_at == "end" else ())
    checkpoints = checkpoint_ladder(chosen, edits, spec.batch_size)
    batches = tuple(batch_bounds(edits, spec.batch_size, checkpoints))
    positions = {n: eval_positions(n, spec.eval_sample, seed) for n in checkpoints}
    check_save_model(spec.save_model, checkpoints)
    source = spec.model or task.default_model(build=False)
    if source is None:
        raise ValueError(f"the {task.name} task has no built-in model: pass --model NAME_OR_PATH")
    source = str(source)
    architecture = architecture_of(source, spec.trust_remote_code)
    if architecture is not None:  # its releases' settings for a published model come first
        setups = method_setups(spec, architecture, notes, labels)
    capability, capability_at = _capability(spec, seed, edits, checkpoints)
    backend = choose_backend(spec.probe_backend, device)
    tokenizer = _model_tokenizer(source, spec.trust_remote_code, spec.model is None)
    shown = _prompt_format(spec, task, records, tokenizer, first_seed, notes)
    check_context(records, tokenizer, shown, source, spec.trust_remote_code)

    shape, run_shape, estimates, backend, capacity = _estimate(
        spec, task, records, positions, source, device, dtype, backend, setups,
        lambda: train_split(task, records), notes, tokenizer, shown)
    if architecture is None and shape is not None:
        architecture = shape.architecture
    digest = dataset_hash(list(records))
    run_config: dict[str, object] = {
        "task": task.name, "task_config": config_dict(task.config), "data": task.options.data,
        "split": spec.split, "limit": spec.limit, "edits": edits, "batch_size": spec.batch_size,
        "checkpoints": list(checkpoints), "eval_sample": spec.eval_sample, "model": source,
        "dtype": str(dtype).removeprefix("torch."), "seed": seed, "dataset_hash": digest,
        "skipped_records": task.skipped_records(), "protocol": protocol.record(),
        **shown.config(),  # nothing for raw (the protocol record names the format)
    }
    if capability is not None:
        run_config["capability"] = {**config_dict(capability), "at": sorted(capability_at)}
    revision = getattr(shape.meta.config, "_commit_hash", None) if shape is not None else None
    if revision:  # the hub commit of the model's files, where it came from the hub
        run_config["model_revision"] = revision
    if spec.device_map:
        run_config["device_map"] = spec.device_map
    if not spec.master_copy:  # recorded only when off, so that earlier runs keep their ids
        run_config["master_copy"] = False
    if spec.gen_eval:
        run_config["generated"] = {"max_new_tokens": spec.gen_max_tokens,
                                   "prompt_format": task.generation_prompt("{prompt}"),
                                   **({"rule": spec.gen_rule} if spec.gen_rule != "editbench"
                                      else {})}
    return RunPlan(spec=spec, seed=seed, task=task, records=records, checkpoints=checkpoints,
                   batches=batches, positions=positions, methods=setups, model_source=source,
                   architecture=architecture, device=device, dtype=dtype, backend=backend,
                   cache_dir=spec.cache_dir or cache_root(), capability=capability,
                   capability_at=capability_at, estimates=estimates, capacity=capacity,
                   run_config=run_config, run_id=config_hash(run_config), dataset_hash=digest,
                   protocol=protocol, notes=tuple(notes), model_shape=shape, run_shape=run_shape,
                   prompt_format=shown)


def resolve_sweep(spec: RunSpec) -> tuple[RunPlan, ...]:
    """One plan per seed of ``spec``."""
    return tuple(resolve(spec, seed) for seed in spec.seed)


def for_cell(plan: RunPlan, setup: MethodSetup, out: Path) -> RunPlan:
    """One method of ``plan`` as a sweep cell: its store in its own ``out`` folder (the driver
    merges it) and only its own settings; everything else as resolved."""
    # the other methods' --params are not its
    owners = (plan.task.name, setup.label, setup.ref.name)
    spec = replace(plan.spec, methods=(setup.label,), out=out, restart=(),
                   params={k: v for k, v in plan.spec.params.items() if k in owners})
    return replace(plan, spec=spec, methods=(setup,),
                   estimates=tuple(e for e in plan.estimates if e.label == setup.label))
