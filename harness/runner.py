"""The lifelong runner: every method edits a fresh copy of the same model, batch after batch.

For each method: load the base model, ``prepare``, then apply the run's batches in their fixed,
seeded order; at every checkpoint of the ladder, score every edit made so far (or a stratified
sample), snapshot the edited weights and commit the checkpoint to the store in one transaction.
Rerunning the same command resumes each method from its last stored checkpoint.
"""

from __future__ import annotations

import errno
import logging
import math
import random
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__
from ..core.architectures import architecture_of
from ..core.cache import cache_root
from ..core.configs import DTYPE_CHOICES, PROBE_BACKENDS, build_config, config_dict, config_hash
from ..core.faults import fault_point
from ..core.method import EditContext, EditMethod, MethodConfig, MethodRef
from ..core.models import ModelLayout, load_model, load_tokenizer, resolve_device, resolve_dtype
from ..core.numerics import current_numerics, numerics_difference
from ..core.plan import eval_positions, parse_checkpoints, plan_batches
from ..core.precision import split_state
from ..core.probe import HFProbe, ProbeBackend, RewrittenPrompts
from ..core.probe_vllm import installed_vllm_version, vllm_available, vllm_unavailable_reason
from ..core.progress import progress
from ..core.records import EditRecord, PairScore, check_disjoint, dataset_hash
from ..core.snapshot import SnapshotError, load_snapshot, prune_snapshots, save_snapshot
from ..core.store import ResultsStore, StoreError, hold_store
from ..core.task import Task, TaskOptions
from ..core.timing import MemoryMonitor, PhaseTimer, device_name
from ..methods import METHODS
from ..tasks import TASKS
from .capability import (
    CAPABILITY_SETS,
    CapabilitySet,
    CapabilitySettings,
    capability_accuracy,
    load_capability_sets,
)
from .evaluate import (
    CORE_METRICS,
    Baseline,
    neighbour_pairs,
    pre_edit_summary,
    record_metrics,
    score_edits,
)
from .generated import (
    GENERATED_METRICS,
    pre_edit_generated,
    record_generated_metrics,
    score_generated,
    unedited_generations,
)
from .preflight import check_before_loading
from .saved import check_save_model, save_edited_model, saved_model_folder, warn_if_passed
from .threads import fit_threads_to_model

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class RunSpec:
    """What the user asked for; every field has the CLI's default. It checks itself when made, so
    every entry point (the CLI, a sweep, ``editbench train``, the Python API) refuses the same bad
    options with the same message, before anything is loaded."""

    methods: tuple[str, ...] = ()  # NAME or NAME@PRESET; empty: every registered method that needs no download
    task: str | None = None  # None: the registered default task (the pocket world)
    data: str | None = None
    split: str = "eval"
    limit: int | None = None
    edits: int | None = None  # None: the task's default
    batch_size: int = 10
    checkpoints: str | None = None  # comma-separated edit counts; None: a geometric ladder
    eval_sample: int | None = None
    model: str | None = None  # None: the task's own model (the pocket world trains one)
    dtype: str = "auto"
    device: str = "auto"
    seed: int = 0
    out: Path = Path("editbench-results")
    params: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    trust_remote_code: bool = False
    cache_dir: Path | None = None
    #: method label or name -> folder of a trained editor (``--editor METHOD=DIR``)
    editors: Mapping[str, Path] = field(default_factory=dict)
    lenient: bool = False
    capability: tuple[str, ...] = ()  # general-capability sets asked after editing, e.g. ("sst2", "mmlu")
    capability_data: str | None = None
    capability_limit: int = 100
    capability_at: str | None = None  # comma-separated edit counts; None: the last checkpoint
    probe_backend: str = "auto"  # who scores prompts: auto | hf | vllm
    vllm_memory: float = 0.4  # share of GPU memory the vLLM engine takes
    restart: tuple[str, ...] = ()  # methods whose stored results (and snapshots) are dropped first
    gen_eval: bool = True  # score generated answers beside teacher-forced ones (harness/generated.py)
    gen_max_tokens: int = 16  # at most this many new tokens per generated answer
    #: float32 master copies of edited bf16/fp16 tensors (core/precision.py); off only to measure rounding
    master_copy: bool = True
    save_model: int | None = None  # the checkpoint at which each edited model is saved (harness/saved.py)
    #: the folder under which ``--save-model`` writes (``models/...``); None: ``out``. A sweep's cell keeps
    #: its store in its own worker folder but saves its models in the sweep's
    models_out: Path | None = None
    #: run even when the plan (``editbench plan``) says a method will not fit the device's memory
    ignore_plan: bool = False
    #: ``auto``: shard the model over the visible GPUs (accelerate's device map); None: one device
    device_map: str | None = None

    @property
    def models_folder(self) -> Path:
        """Where ``--save-model`` writes: ``models_out``, else ``out``."""
        return self.models_out or self.out

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise the types a Python caller may pass loosely
        set_(self, "methods", tuple(self.methods))
        set_(self, "capability", tuple(self.capability))
        set_(self, "restart", tuple(self.restart))
        set_(self, "out", Path(self.out))
        if self.models_out is not None:
            set_(self, "models_out", Path(self.models_out))
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} is a file; results go to a folder: choose another --out")
        set_(self, "editors", {k: Path(v) for k, v in self.editors.items()})
        if self.cache_dir is not None:
            set_(self, "cache_dir", Path(self.cache_dir))
        refs = [MethodRef.parse(label) for label in self.methods]
        labels = [r.label for r in refs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"--methods lists a method twice: {','.join(labels)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"--seed must be an integer, got {self.seed!r}")
        for option, value, least in (("--limit", self.limit, 1), ("--edits", self.edits, 1),
                                     ("--batch-size", self.batch_size, 1), ("--eval-sample", self.eval_sample, 2),
                                     ("--capability-limit", self.capability_limit, 1),
                                     ("--gen-max-tokens", self.gen_max_tokens, 1),
                                     ("--save-model", self.save_model, 1)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ValueError(f"{option} must be an integer of at least {least}, got {value!r}")
        if self.dtype not in DTYPE_CHOICES:
            raise ValueError(f"--dtype {self.dtype!r} is not one of: {', '.join(DTYPE_CHOICES)}")
        if self.probe_backend not in PROBE_BACKENDS:
            raise ValueError(f"--probe-backend {self.probe_backend!r}: choose {', '.join(PROBE_BACKENDS)}")
        if not 0 < self.vllm_memory < 1:
            raise ValueError(f"--vllm-memory must be a share between 0 and 1, got {self.vllm_memory}")
        unknown = [name for name in self.capability if name not in CAPABILITY_SETS]
        if unknown:
            raise ValueError(f"--capability: unknown set {unknown[0]!r}; known: {', '.join(CAPABILITY_SETS)}")
        if self.capability_at and not self.capability:
            raise ValueError("--capability-at needs --capability (which sets to ask)")
        if self.split not in ("eval", "train"):
            raise ValueError(f"--split {self.split!r}: choose eval or train")


@dataclass(frozen=True)
class MethodPlan:
    ref: MethodRef  # ref.label is what the store and the reports call it, e.g. "ft-m" or "rledit@paper"
    cls: type[EditMethod]
    config: MethodConfig
    config_hash: str
    editor: Path | None = None  # a trained editor given with --editor

    @property
    def label(self) -> str:
        return self.ref.label


@dataclass
class RunOutcome:
    run_id: str
    store_path: Path
    statuses: dict[str, str]

    @property
    def ok(self) -> bool:
        return all(s in ("done", "diverged") for s in self.statuses.values())


def resolve_task(spec: RunSpec) -> Task:
    name = spec.task or TASKS.default()
    cls = TASKS[name]
    options = TaskOptions(data=spec.data, split=spec.split, limit=spec.limit, cache_dir=spec.cache_dir,
                          lenient=spec.lenient)
    config = build_config(cls.Config, spec.params.get(name, {}), owner=f"task {name}")
    return cls(options, config)


def default_methods() -> tuple[str, ...]:
    """Every registered method that needs no download."""
    return tuple(name for name, cls in METHODS.items() if not cls.needs_download)


def resolve_methods(spec: RunSpec, architecture: str | None = None) -> list[MethodPlan]:
    """Each method's plan; on a published model (``architecture``) its release's settings for it come
    first (``MethodRef.config``), which is logged."""
    plans = []
    for label in spec.methods or default_methods():
        ref = MethodRef.parse(label)
        config = ref.config(spec.params, architecture)
        if architecture in ref.cls.presets:
            log.info("%s: taking the settings published for %s (preset %s@%s), under anything set by hand",
                     ref.label, architecture, ref.name, architecture)
        editor = spec.editors.get(ref.label) or spec.editors.get(ref.name)
        if editor is not None and not editor.exists():
            raise FileNotFoundError(f"--editor {ref.label}={editor}: no such folder")
        plans.append(MethodPlan(ref, ref.cls, config,
                                config_hash(ref.name, config_dict(config), str(editor) if editor else None), editor))
    named = {p.label for p in plans} | {p.ref.name for p in plans}
    unknown = sorted(set(spec.editors) - named)
    if unknown:
        raise ValueError(f"--editor names {unknown[0]!r}, which is not among --methods")
    return plans


def check_param_owners(spec: RunSpec, task: Task, plans: list[MethodPlan]) -> None:
    """A ``--param`` for a method or task that is not in the run would be silently ignored: refuse it."""
    owners = {task.name} | {p.label for p in plans} | {p.ref.name for p in plans}
    stray = sorted(set(spec.params) - owners)
    if stray:
        raise ValueError(f"--param {stray[0]}.…: {stray[0]!r} is neither the task nor a method of this run "
                         f"(selected: {', '.join(sorted(owners))})")


def check_restart(spec: RunSpec, plans: list[MethodPlan]) -> None:
    """``--restart`` must name methods of this run (by label, or by name for all its presets)."""
    named = {p.label for p in plans} | {p.ref.name for p in plans}
    stray = [label for label in spec.restart if label not in named]
    if stray:
        raise ValueError(f"--restart {stray[0]}: not a method of this run (selected: "
                         f"{', '.join(p.label for p in plans)})")


def restarts(spec: RunSpec, plan: MethodPlan) -> bool:
    return plan.label in spec.restart or plan.ref.name in spec.restart


#: errors of the machine rather than of a method: the run stops, since every later method would meet them
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def is_storage_error(exc: BaseException) -> bool:
    return isinstance(exc, StoreError) or (isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS)


#: failures that are a method's, explained in one line: the run records them and goes on
ROUTINE_FAILURES = (SnapshotError, MemoryError, FloatingPointError, torch.cuda.OutOfMemoryError)


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions(device: torch.device) -> dict[str, str]:
    import platform

    import transformers

    versions = {"editbench": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                "python": platform.python_version()}
    if device.type == "cuda":
        versions["cuda"] = str(torch.version.cuda)
    return versions


def run_texts(task: Task, records: Sequence[EditRecord], capability_sets: Sequence[CapabilitySet]) -> Iterator[str]:
    """Every text the run scores or generates from, each prompt joined with its record's longest
    answer: what the vLLM engine's ``max_model_len`` must hold."""
    for record in records:
        answers = [record.target_new, record.target_true or "", *(n.answer for n in record.neighbours)]
        longest = max(answers, key=len)
        for prompt in (record.prompt, *record.paraphrases, *(n.prompt for n in record.neighbours)):
            yield f"{prompt} {longest}"
            yield f"{task.generation_prompt(prompt)} {longest}"
        for value in record.extra.values():  # a task's own prompts (CounterFact's generation prompts)
            yield from (item for item in (value if isinstance(value, list | tuple) else [value]) if isinstance(item, str))
    for question_set in capability_sets:
        for query, choices, _ in question_set.questions:
            yield f"{question_set.shots_text}{query} {max(choices, key=len)}"


def _finite(model: torch.nn.Module, names: list[str]) -> bool:
    return all(bool(torch.isfinite(model.get_parameter(n)).all()) for n in names)


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


class Runner:
    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec
        self.cache_dir = spec.cache_dir or cache_root()
        self.device = resolve_device(spec.device)
        self.dtype = resolve_dtype(spec.dtype, self.device)
        self.task = resolve_task(spec)
        self.methods = resolve_methods(spec)  # checked before the model is made or read
        check_param_owners(spec, self.task, self.methods)
        check_restart(spec, self.methods)
        records = self.task.records()
        edits = spec.edits if spec.edits is not None else min(self.task.default_edits(), len(records))
        if edits > len(records):
            raise ValueError(f"--edits {edits}: the {self.task.name} task's {spec.split} split has only "
                             f"{len(records)} records")
        order = stream_order(records, spec.seed)  # one seeded order, shared by every method
        self.records: list[EditRecord] = [records[i] for i in order[:edits]]
        self.edits = edits
        self.checkpoints = parse_checkpoints(spec.checkpoints, edits, spec.batch_size)
        self.batches = plan_batches(edits, spec.batch_size, self.checkpoints)
        self.positions = {n: eval_positions(n, spec.eval_sample, spec.seed) for n in self.checkpoints}
        check_save_model(spec.save_model, self.checkpoints)
        self.model_source = spec.model or self.task.default_model()
        if self.model_source is None:
            raise ValueError(f"the {self.task.name} task has no built-in model: pass --model NAME_OR_PATH")
        tokenizer = load_tokenizer(str(self.model_source), spec.trust_remote_code)  # a model that cannot be found stops us here
        self.architecture = architecture_of(str(self.model_source), spec.trust_remote_code)
        if self.architecture is not None:  # its releases' settings for a published model come first
            self.methods = resolve_methods(spec, self.architecture)
        self.backend = self._resolve_backend(spec.probe_backend)
        self.revision = check_before_loading(self, tokenizer)  # what each method lacks, whether the plan fits
        self._engine: ProbeBackend | None = None
        self.capability = self._capability_plan(spec)
        self.capability_sets = load_capability_sets(self.capability[0]) if self.capability else []
        self.dataset_hash = dataset_hash(self.records)
        self.run_config = {
            "task": self.task.name, "task_config": config_dict(self.task.config), "data": self.task.options.data,
            "split": spec.split, "limit": spec.limit, "edits": edits, "batch_size": spec.batch_size,
            "checkpoints": list(self.checkpoints), "eval_sample": spec.eval_sample, "model": str(self.model_source),
            "dtype": str(self.dtype).removeprefix("torch."), "seed": spec.seed, "dataset_hash": self.dataset_hash,
            "skipped_records": self.task.skipped_records(),
        }
        if self.capability is not None:
            settings, at = self.capability
            self.run_config["capability"] = {**config_dict(settings), "at": sorted(at)}
        if self.revision:  # the hub commit of the model's files, where it came from the hub
            self.run_config["model_revision"] = self.revision
        if spec.device_map:
            self.run_config["device_map"] = spec.device_map
        if not spec.master_copy:  # recorded only when off, so that earlier runs keep their ids
            self.run_config["master_copy"] = False
        if spec.gen_eval:
            self.run_config["generated"] = {"max_new_tokens": spec.gen_max_tokens,
                                            "prompt_format": self.task.generation_prompt("{prompt}")}
        self.run_id = config_hash(self.run_config)

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> RunOutcome:
        """Run (or resume) every method; the results folder is this process's alone meanwhile."""
        spec = self.spec
        with hold_store(spec.out), ResultsStore(spec.out) as store:
            fresh = store.ensure_run(
                self.run_id, task=self.task.name, model=str(self.model_source),
                config={**self.run_config, "methods": [m.label for m in self.methods]},
                versions=_versions(self.device), device=device_name(self.device), seed=spec.seed,
                git_sha=_git_sha(), dataset_hash=self.dataset_hash, n_edits=self.edits,
            )
            generated = (*GENERATED_METRICS, *record_generated_metrics(self.records)) if spec.gen_eval else ()
            store.save_run_plan(self.run_id, (*CORE_METRICS, *record_metrics(self.task, self.records), *generated,
                                              *self.task.metrics), self.batches)
            log.info("%s run %s in %s", "starting" if fresh else "resuming", self.run_id, store.path)
            for plan in self.methods:
                if restarts(spec, plan):
                    self.drop_method(store, plan)
                state = store.cell(self.run_id, plan.label)
                if state is not None and state.config_hash != plan.config_hash:
                    raise ValueError(f"{store.path} already holds {plan.label} results made with other settings; "
                                     f"use another --out, the settings it was run with, or --restart {plan.label} "
                                     "to drop them")
            baseline = self._baseline(store)
            statuses = {plan.label: self._run_method(store, plan, baseline) for plan in self.methods}
        return RunOutcome(self.run_id, store.path, statuses)

    def snapshot_root(self, plan: MethodPlan) -> Path:
        return self.spec.out / "snapshots" / self.run_id / plan.label.replace("/", "_")

    def drop_method(self, store: ResultsStore, plan: MethodPlan) -> None:
        """``--restart``: forget the method's stored results and snapshots in this run."""
        if store.cell(self.run_id, plan.label) is not None:
            log.info("%s: --restart drops its stored results in %s", plan.label, store.path)
        store.drop_cell(self.run_id, plan.label)
        shutil.rmtree(self.snapshot_root(plan), ignore_errors=True)

    def _resolve_backend(self, backend: str) -> str:
        if backend == "auto" and self.device.type == "cuda" and installed_vllm_version() and not vllm_available():
            log.warning("%s; scoring with the Hugging Face backend", vllm_unavailable_reason())
        if backend == "hf" or (backend == "auto" and (self.device.type != "cuda" or not vllm_available())):
            return "hf"
        reason = vllm_unavailable_reason()
        if reason is not None:
            raise ValueError(reason)
        return "vllm"

    def _probe(self, model, tokenizer, edited: list[str]) -> ProbeBackend:
        """The run's probe backend looking at ``model``: HF scores the live model; the vLLM engine is
        built once per run and receives the edited tensors (see ``core/probe_vllm.py``)."""
        if self.backend == "hf":
            return HFProbe(model, tokenizer, self.device)
        if self._engine is None:
            from ..core.probe_vllm import GENERATION_HEADROOM, VLLMProbe, engine_length

            limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
            length = engine_length(tokenizer, run_texts(self.task, self.records, self.capability_sets),
                                   max(self.spec.gen_max_tokens, GENERATION_HEADROOM), limit)
            self._engine = VLLMProbe(str(self.model_source), tokenizer, self.dtype, self.spec.vllm_memory,
                                     self.spec.trust_remote_code, max_model_len=length)
        self._engine.sync(model, edited)
        return self._engine

    def _method_probe(self, method: EditMethod, model, tokenizer, edited: list[str]) -> ProbeBackend:
        """The run's backend for one method: HF where the method changes the forward computation the
        chosen backend cannot run (logged), and the method's prompt rewrite in front where it has one."""
        if self.backend in method.scoring_backends:
            probe = self._probe(model, tokenizer, edited)
        else:
            log.info("%s: scored with the HF backend instead of %s, which cannot run the forward computation "
                     "it changes", method.name, self.backend)
            probe = HFProbe(model, tokenizer, self.device)
        return RewrittenPrompts(probe, method.scoring_prompt) if method.rewrites_prompts else probe

    def _capability_plan(self, spec: RunSpec):
        if not spec.capability:
            return None
        settings = CapabilitySettings(spec.capability, spec.capability_data, spec.capability_limit, seed=spec.seed)
        at = set(parse_checkpoints(spec.capability_at, self.edits, 1)) if spec.capability_at else {self.edits}
        if not at <= set(self.checkpoints):
            raise ValueError(f"--capability-at {spec.capability_at}: the sets are asked at checkpoints; "
                             f"choose among {','.join(map(str, self.checkpoints))}")
        return settings, at

    def train_records(self) -> list[EditRecord]:
        """The task's train split, refused if it shares any record with the edits of this run."""
        train = self.task.load("train")
        check_disjoint(train, self.records, self.task.name, "the evaluated edits")
        return train

    def _load(self):
        model, tokenizer = load_model(self.model_source, self.device, self.dtype, self.spec.trust_remote_code,
                                      device_map=self.spec.device_map)
        fit_threads_to_model(model, self.device)  # one thread for a small model (harness/threads.py)
        return model, tokenizer

    def _baseline(self, store: ResultsStore) -> Baseline:
        """Unedited predictions on neighbourhood prompts, computed once and kept in the store."""
        needed = sorted({p for positions in self.positions.values() for p in positions})
        records = [self.records[p] for p in needed]
        stored = store.load_base_predictions(self.run_id)
        generations = store.load_base_generations(self.run_id)
        wanted = {(p.prompt, p.target) for p in neighbour_pairs(records)}
        answers = ({self.task.generation_prompt(n.prompt) for r in records for n in r.neighbours}
                   if self.spec.gen_eval else set())
        if wanted <= stored.keys() and answers <= generations.keys() and \
                store.runs().set_index("run_id").loc[self.run_id, "baseline"]:
            return Baseline({k: PairScore(v[1], 0.0, len(v[0]), v[0]) for k, v in stored.items()}, generations)
        timer = PhaseTimer(self.device)
        with timer.phase("baseline"):
            model, tokenizer = self._load()
            probe = self._probe(model, tokenizer, [])
            forward_before = probe.forward_seconds
            baseline = Baseline.compute(probe, records)
            summary = pre_edit_summary(probe, records)  # over the edits that are scored, as the metrics are
            if self.spec.gen_eval:
                baseline.generations = unedited_generations(probe, self.task, records, self.spec.gen_max_tokens)
                summary.update(pre_edit_generated(probe, self.task, records, self.spec.gen_max_tokens))
            unedited = capability_accuracy(probe, self.capability_sets) if self.capability_sets else None
        self._note_session(store, "", resuming=False)
        timer.record("baseline_forward", 0, probe.forward_seconds - forward_before)
        del model
        if unedited is not None:
            store.save_unedited_capability(self.run_id, unedited)
        store.save_base_predictions(self.run_id, [(p, t, s.predictions, s.token_accuracy)
                                                  for (p, t), s in baseline.predictions.items()])
        store.save_base_generations(self.run_id, baseline.generations)
        store.set_baseline(self.run_id, summary)
        store.record_timings(self.run_id, "", timer.drain())
        log.info("unedited model: %s", ", ".join(f"{k}={v:.3f}" for k, v in summary.items()))
        if summary.get("pre_edit_accuracy", 1.0) < 0.5:
            log.warning("the unedited model gets only %.0f%% of the true answers right; specificity against "
                        "dataset answers will be low whatever the method", 100 * summary["pre_edit_accuracy"])
        return baseline

    def _note_session(self, store: ResultsStore, label: str, resuming: bool) -> None:
        """Store the kernels, threads and flags this stretch of work runs under (``core/numerics.py``);
        a resume under others says so, since its scores may then differ slightly from an
        uninterrupted run's."""
        now = current_numerics(self.device)
        before = store.record_session(self.run_id, label, now)
        change = numerics_difference(before, now) if resuming and before is not None else None
        if change:
            log.warning("%s: resumed under other numerics than its stored edits (%s); later scores may differ "
                        "slightly from an uninterrupted run's", label, change)

    def _run_method(self, store: ResultsStore, plan: MethodPlan, baseline: Baseline) -> str:
        state = store.cell(self.run_id, plan.label)
        if state is not None and state.status in ("done", "diverged"):
            log.info("%s: already %s in the store, skipped", plan.label, state.status)
            return state.status
        done = state.last_checkpoint if state is not None else 0
        store.start_cell(self.run_id, plan.label, config_dict(plan.config), plan.config_hash)
        timer = PhaseTimer(self.device)
        try:
            with MemoryMonitor(self.device) as memory:
                memory.reset()
                status = self._edit_stream(store, plan, baseline, done, self.snapshot_root(plan), timer, memory)
        except Exception as exc:  # one broken method must not stop the comparison
            message = str(exc) if isinstance(exc, SnapshotError) else f"{type(exc).__name__}: {exc}"
            if is_storage_error(exc):  # the disk, not the method: every later method would fail the same way
                self._record_failure(store, plan, message)
                raise
            if isinstance(exc, ROUTINE_FAILURES):
                log.error("%s failed: %s", plan.label, message, exc_info=log.isEnabledFor(logging.DEBUG))
            else:
                log.exception("%s failed", plan.label)
            self._record_failure(store, plan, message)
            return "failed"
        return status

    def _record_failure(self, store: ResultsStore, plan: MethodPlan, message: str) -> None:
        """Mark the method failed; if even that cannot be written (a full disk), say so in one line:
        the cell then stays 'running' and the next run resumes it from its last checkpoint."""
        try:
            store.finish_cell(self.run_id, plan.label, "failed", error=message)
        except (StoreError, OSError) as exc:
            log.error("%s failed, and recording the failure in %s failed too (%s); rerun the same command "
                      "to resume it", plan.label, store.path, exc)

    def _edit_stream(self, store, plan, baseline, done, snapshots, timer, memory) -> str:
        torch.manual_seed(self.spec.seed)
        generator = torch.Generator().manual_seed(self.spec.seed)
        with timer.phase("load"):
            model, tokenizer = self._load()
        ctx = EditContext(model=model, tokenizer=tokenizer, layout=ModelLayout.of(model), device=self.device,
                          cache_dir=self.cache_dir, task=self.task, seed=self.spec.seed, generator=generator,
                          train_records=self.train_records, trained_editor=plan.editor,
                          master_copies=self.spec.master_copy)
        method = plan.cls(plan.config, ctx)
        with timer.phase("prepare"):
            method.prepare()
        edited = method.edited_parameters()
        if done:
            checksums = store.snapshot_checksums(self.run_id, plan.label, done)
            state, masters = split_state(load_snapshot(snapshots, done, model, generator, checksums, plan.label))
            method.load_state_dict(state)
            ctx.masters.load_state_dict(masters)
            log.info("%s: resuming after %d stored edits", plan.label, done)
            warn_if_passed(self.spec.save_model, done,
                           saved_model_folder(self.spec.models_folder, self.run_id, plan.label, self.spec.save_model or 0))
        self._note_session(store, plan.label, resuming=bool(done))
        store.record_timings(self.run_id, plan.label, timer.drain())
        probe = self._method_probe(method, model, tokenizer, edited)
        self._stream_start = (time.monotonic(), done)  # for the checkpoint lines' estimate of what is left
        bar = progress(total=self.edits, initial=done, desc=f"{plan.label} edits", unit="edit")
        try:
            for index, (start, end) in enumerate(self.batches):
                if end <= done:
                    continue
                with timer.phase("edit", index):
                    method.apply(self.records[start:end])
                bar.update(end - start)
                if not _finite(model, edited):
                    log.warning("%s diverged: non-finite weights after %d edits", plan.label, end)
                    store.record_timings(self.run_id, plan.label, timer.drain())
                    store.finish_cell(self.run_id, plan.label, "diverged", diverged_at=end)
                    return "diverged"
                if end in self.positions:
                    self._checkpoint(store, plan, baseline, probe, method, end, snapshots, timer, memory)
        finally:
            bar.close()
        store.finish_cell(self.run_id, plan.label, "done")
        prune_snapshots(snapshots, keep=self.edits)
        return "done"

    def _checkpoint(self, store, plan, baseline, probe, method, n_edits, snapshots, timer, memory) -> None:
        capability = None
        forward_before = probe.forward_seconds
        with timer.phase("eval", n_edits):
            probe.sync(method.ctx.model, method.edited_parameters())  # a vLLM engine receives the edited tensors
            rows = score_edits(probe, baseline, self.records, self.positions[n_edits])
            if self.spec.gen_eval:
                rows += score_generated(probe, self.task, baseline.generations, self.records,
                                        self.positions[n_edits], self.spec.gen_max_tokens)
            rows += self.task.extra_metrics(probe, self.records, self.positions[n_edits])
            if self.capability_sets and n_edits in self.capability[1]:
                capability = capability_accuracy(probe, self.capability_sets)
        # the model's share of the evaluation, for overhead accounting
        timer.record("eval_forward", n_edits, probe.forward_seconds - forward_before)
        bad = [r for r in rows if not math.isfinite(r.value)]
        if bad:
            raise FloatingPointError(f"metric {bad[0].metric} of edit {bad[0].uid} is not finite")
        checksums = save_snapshot(snapshots, n_edits, method.ctx.model, method.edited_parameters(),
                                  {**method.state_dict(), **method.ctx.masters.state_dict()}, method.ctx.generator)
        fault_point("after-snapshot")
        store.commit_checkpoint(self.run_id, plan.label, n_edits, rows, timer.drain(), memory.peak_bytes(),
                                capability=capability, snapshot=checksums)
        fault_point("after-checkpoint")
        if n_edits == self.spec.save_model:
            save_edited_model(method.ctx.model, method.ctx.tokenizer,
                              saved_model_folder(self.spec.models_folder, self.run_id, plan.label, n_edits))
        prune_snapshots(snapshots, keep=n_edits)
        started, first = self._stream_start
        elapsed = time.monotonic() - started
        left = elapsed / (n_edits - first) * (self.edits - n_edits) if n_edits > first else 0.0
        means = {r.metric: [] for r in rows if r.metric in ("efficacy_acc", "efficacy_gen_em")}
        for r in rows:
            if r.metric in means:
                means[r.metric].append(r.value)
        scores = ", ".join(f"{k} {sum(v) / len(v):.3f}" for k, v in means.items() if v)
        log.info("%s: %d of %d edits, checkpoint stored (%s); %.0f s so far, about %.0f s to go", plan.label,
                 n_edits, self.edits, scores or "no scores", elapsed, left)
