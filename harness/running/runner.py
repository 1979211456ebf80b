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
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ...core.configs import config_dict
from ...core.faults import fault_point
from ...core.identity import code_identity, describe_code, git_commit, package_code
from ...core.method import EditContext, EditMethod, MethodSetupError
from ...core.models import ModelLayout, ModelLoadError, load_model, model_fingerprint
from ...core.numerics import current_numerics, numerics_difference
from ...core.precision import split_state
from ...core.probe import ProbeBackend, RewrittenPrompts
from ...core.progress import progress
from ...core.records import EditRecord, PairScore
from ...core.snapshot import SnapshotError, load_snapshot, prune_snapshots, save_snapshot
from ...core.sources import RecordError
from ...core.store import ResultsStore, StoreError, hold_store
from ...core.task import Task
from ...core.timing import MemoryMonitor, PhaseTimer, device_name
from ...core.tokenize import PairEncoder
from ..evaluation.capability import CapabilitySet, capability_accuracy, load_capability_sets
from ..evaluation.drafts import DraftingProbe, draftable, drafting
from ..evaluation.generated import (
    asked_answers,
    generate_answers,
    generated_metrics,
    generated_rows,
    pre_edit_generated,
    record_generated_metrics,
    sample_rows,
    unedited_generations,
    unedited_prompts,
)
from ..evaluation.teacher_forced import (
    CORE_METRICS,
    Baseline,
    neighbour_pairs,
    pre_edit_summary,
    record_metrics,
    teacher_forced,
)
from ..plan.preflight import log_peaks, refuse
from ..plan.resolve import MethodSetup, RunPlan
from . import baseline_cache
from .saved import ModelCard, save_edited_model, saved_model_folder, warn_if_passed
from .threads import fit_threads_to_model

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    run_id: str
    store_path: Path
    statuses: dict[str, str]

    @property
    def ok(self) -> bool:
        return all(s in ("done", "diverged") for s in self.statuses.values())


#: errors of the machine rather than of a method: the run stops, since every later method would
#: meet them
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                  errno.EIO}


def is_storage_error(exc: BaseException) -> bool:
    return isinstance(exc, StoreError) or (isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS)


#: the typed errors whose message says it all (what the method or task was handed, naming it)
EXPLAINED = (MethodSetupError, RecordError, ModelLoadError)
#: failures that are a method's, explained in one line: the run records them and goes on
ROUTINE_FAILURES = (SnapshotError, MemoryError, FloatingPointError, torch.cuda.OutOfMemoryError,
                    *EXPLAINED)


def _versions(device: torch.device) -> dict[str, str]:
    import platform

    import transformers

    versions = {**code_identity(), "torch": torch.__version__,
                "transformers": transformers.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        versions["cuda"] = str(torch.version.cuda)
    return versions


def run_texts(task: Task, records: Sequence[EditRecord],
              capability_sets: Sequence[CapabilitySet],
              shown: Callable[[str], str] = lambda prompt: prompt) -> Iterator[str]:
    """Every text the run scores or generates from, each prompt as the model is ``shown`` it
    (``--prompt-format``) joined with its record's longest answer: what the vLLM engine's
    ``max_model_len`` must hold."""
    for record in records:
        answers = [record.target_new, record.target_true or "",
                   *(n.answer for n in record.neighbours)]
        longest = max(answers, key=len)
        for prompt in (record.prompt, *record.paraphrases, *(n.prompt for n in record.neighbours)):
            yield f"{shown(prompt)} {longest}"
            yield f"{shown(task.generation_prompt(prompt))} {longest}"
        # a task's own prompts (CounterFact's generation prompts)
        for value in record.extra.values():
            yield from (shown(item)
                        for item in (value if isinstance(value, list | tuple) else [value])
                        if isinstance(item, str))
    for question_set in capability_sets:
        for query, choices, _ in question_set.questions:
            yield f"{shown(question_set.shots_text + query)} {max(choices, key=len)}"


def edit_text(task: Task, record: EditRecord) -> dict:
    """What the store keeps of an edit (``edit_texts``): the record's text fields (its task's
    ``extra`` fields are the task's own business and stay out), and, where the task wraps a prompt
    for generation (``Task.generation_prompt``), each wrapped prompt under ``generation_prompts``,
    so an export can decode from what the run decoded from."""
    text = record.to_json()
    text.pop("extra", None)
    prompts = (record.prompt, *record.paraphrases, *(n.prompt for n in record.neighbours),
               *(q.prompt for q in record.portability))
    wrapped = {p: task.generation_prompt(p) for p in prompts}
    if any(p != w for p, w in wrapped.items()):
        text["generation_prompts"] = wrapped
    return text


def _finite(model: torch.nn.Module, names: list[str]) -> bool:
    return all(bool(torch.isfinite(model.get_parameter(n)).all()) for n in names)


class Runner:
    """Executes a resolved :class:`~editbench.harness.plan.resolve.RunPlan`: nothing is loaded
    until :meth:`run`."""

    def __init__(self, plan: RunPlan, models_folder: Path | None = None) -> None:
        self.plan = plan
        self.spec = plan.spec
        self.seed = plan.seed
        self.task = plan.task
        self.records = plan.records
        self.edits = plan.edits
        self.checkpoints = plan.checkpoints
        self.batches = plan.batches
        self.positions = plan.positions
        self.methods = plan.methods
        self.model_source = plan.model_source
        self.device, self.dtype, self.backend = plan.device, plan.dtype, plan.backend
        self.cache_dir = plan.cache_dir
        self.run_id, self.run_config = plan.run_id, plan.run_config
        self.prompt_format = plan.prompt_format
        #: where ``--save-model`` writes (``models/...``): a sweep's cell keeps its store in its
        #: own worker folder but saves its models in the sweep's
        self.models_folder = models_folder or plan.spec.out
        self.capability_sets: list[CapabilitySet] = []
        self._engine: ProbeBackend | None = None

    def train_records(self) -> list[EditRecord]:
        return self.plan.train_records()

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> RunOutcome:
        """Run (or resume) every method; the results folder is this process's alone meanwhile."""
        self.prepare()
        with hold_store(self.spec.out), ResultsStore(self.spec.out) as store:
            baseline = self.begin(store)
            statuses = {setup.label: self._run_method(store, setup, baseline)
                        for setup in self.methods}
        return RunOutcome(self.run_id, store.path, statuses)

    def prepare(self) -> None:
        """What comes before any store is written: the checks, the task's model, the capability
        sets."""
        refuse(self.plan)  # what each method lacks, whether the plan fits
        log_peaks(self.plan)
        spec = self.spec
        if spec.model is None:  # the task's own model: built (once, cached) if it is not shipped
            built = self.task.default_model()
            if built != self.model_source:
                raise RuntimeError(f"the task's model was planned at {self.model_source} but "
                                   f"built at {built}")
        if self.plan.capability is not None:
            self.capability_sets = load_capability_sets(self.plan.capability)

    def begin(self, store: ResultsStore) -> Baseline:
        """Everything in ``store`` before the first method: the run's record, outline and edit
        texts, and the unedited model's baseline (computed once, then read back). A sweep run side
        by side calls it on the main store before its cells start."""
        spec = self.spec
        self.check_code(store)
        fresh = store.ensure_run(
            self.run_id, task=self.task.name, model=str(self.model_source),
            config={**self.run_config, "methods": [m.label for m in self.methods]},
            versions=_versions(self.device), device=device_name(self.device), seed=self.seed,
            git_sha=git_commit(), dataset_hash=self.plan.dataset_hash, n_edits=self.edits,
        )
        generated = ((*generated_metrics(spec.gen_rule),
                      *record_generated_metrics(self.records)) if spec.gen_eval else ())
        store.save_run_outline(self.run_id, (*CORE_METRICS,
                                             *record_metrics(self.task, self.records),
                                             *generated, *self.task.metrics), self.batches)
        if store.edit_text_count(self.run_id) < self.edits:  # the planned stream, once
            planned = enumerate(self.records[: self.edits])
            store.save_edit_texts(self.run_id, ((p, r.uid, edit_text(self.task, r))
                                                for p, r in planned))
        resuming = not fresh and bool(store.stored_methods(self.run_id))  # not a seeded cell
        log.info("%s run %s in %s", "resuming" if resuming else "starting", self.run_id,
                 store.path)
        for setup in self.methods:
            if self.plan.restarts(setup):
                self.drop_method(store, setup)
            state = store.cell(self.run_id, setup.label)
            if state is not None and state.config_hash != setup.config_hash:
                raise ValueError(f"{store.path} already holds {setup.label} results made with "
                                 "other settings; use another --out, the settings it was run "
                                 f"with, or --restart {setup.label} to drop them")
        return self._baseline(store)

    def check_code(self, store: ResultsStore) -> None:
        """A stored run resumes only under the code that made it (``core/identity.py``): else one
        line naming both, unless ``--allow-code-change`` (stored, and marked on the board) or
        ``--restart`` of every method it holds (the run is then dropped whole, baseline too)."""
        stored, now = store.run_versions(self.run_id), code_identity()
        if stored is None or stored.get("code") == now["code"]:
            return
        held = store.stored_methods(self.run_id)
        restarted = {s.label for s in self.methods if self.plan.restarts(s)}
        if self.spec.allow_code_change:
            log.warning("resuming run %s, made by %s, under %s (--allow-code-change: stored, and "
                        "marked on the board)", self.run_id, describe_code(stored),
                        describe_code(now))
            store.note_code_change(self.run_id, now)
        elif set(held) <= restarted:
            log.info("run %s was made by %s; %s drops it whole (its baseline too) and runs it "
                     "again under %s", self.run_id, describe_code(stored),
                     f"--restart {','.join(held)}" if held else "holding no results, it",
                     describe_code(now))
            store.drop_run(self.run_id)
            shutil.rmtree(self.spec.out / "snapshots" / self.run_id, ignore_errors=True)
        else:
            raise ValueError(
                f"{store.path} holds run {self.run_id} made by {describe_code(stored)}, and this "
                f"is {describe_code(now)}: pass --restart {','.join(held)} to run it again, "
                "--allow-code-change to resume it under this code (marked on the board), or "
                "another --out")

    def snapshot_root(self, setup: MethodSetup) -> Path:
        return self.spec.out / "snapshots" / self.run_id / setup.label.replace("/", "_")

    def drop_method(self, store: ResultsStore, setup: MethodSetup) -> None:
        """``--restart``: forget the method's stored results and snapshots in this run."""
        if store.cell(self.run_id, setup.label) is not None:
            log.info("%s: --restart drops its stored results in %s", setup.label, store.path)
        store.drop_cell(self.run_id, setup.label)
        shutil.rmtree(self.snapshot_root(setup), ignore_errors=True)

    def _probe(self, model, tokenizer, edited: list[str]) -> ProbeBackend:
        """The run's probe backend looking at ``model``: HF scores the live model; the vLLM engine
        is built once per run and receives the edited tensors (see ``core/probe_vllm.py``)."""
        if self.backend == "hf":
            return DraftingProbe(model, tokenizer, self.device, prompt_format=self.prompt_format)
        if self._engine is None:
            from ...core.probe_vllm import GENERATION_HEADROOM, VLLMProbe, engine_length

            limit = (getattr(model.config, "max_position_embeddings", None)
                     or getattr(model.config, "n_positions", None))
            length = engine_length(tokenizer,
                                   run_texts(self.task, self.records, self.capability_sets,
                                             PairEncoder(tokenizer, self.prompt_format).shown),
                                   max(self.spec.gen_max_tokens, GENERATION_HEADROOM), limit)
            self._engine = VLLMProbe(str(self.model_source), tokenizer, self.dtype,
                                     self.spec.vllm_memory, self.spec.trust_remote_code,
                                     max_model_len=length, prompt_format=self.prompt_format)
        self._engine.sync(model, edited)
        return self._engine

    def _method_probe(self, method: EditMethod, model, tokenizer,
                      edited: list[str]) -> ProbeBackend:
        """The run's backend for one method: HF where the method changes the forward computation
        the chosen backend cannot run (logged), and the method's prompt rewrite in front where it
        has one."""
        if self.backend in method.scoring_backends:
            probe = self._probe(model, tokenizer, edited)
        else:
            log.info("%s: scored with the HF backend instead of %s, which cannot run the forward "
                     "computation it changes", method.name, self.backend)
            probe = DraftingProbe(model, tokenizer, self.device, prompt_format=self.prompt_format)
        return RewrittenPrompts(probe, method.scoring_prompt) if method.rewrites_prompts else probe

    def _load(self):
        model, tokenizer = load_model(self.model_source, self.device, self.dtype,
                                      self.spec.trust_remote_code, device_map=self.spec.device_map)
        fit_threads_to_model(model, self.device)  # one thread for a small model (threads.py)
        return model, tokenizer

    def _baseline(self, store: ResultsStore) -> Baseline:
        """Unedited predictions on neighbourhood prompts, computed once and kept in the store; with
        generated scoring, also the unedited model's answer to every scored prompt (the samples'
        reference; a store from before samples gets them on resume)."""
        needed = sorted({p for positions in self.positions.values() for p in positions})
        records = [self.records[p] for p in needed]
        stored = store.load_base_predictions(self.run_id)
        generations = store.load_base_generations(self.run_id)
        wanted = {(p.prompt, p.target) for p in neighbour_pairs(records)}
        answers = ({self.task.generation_prompt(n.prompt) for r in records for n in r.neighbours}
                   if self.spec.gen_eval else set())
        sampled = set(needed) <= store.sample_positions(self.run_id) or not self.spec.gen_eval
        if wanted <= stored.keys() and answers <= generations.keys() and sampled and \
                store.runs().set_index("run_id").loc[self.run_id, "baseline"]:
            return Baseline({k: PairScore(v[1], 0.0, len(v[0]), v[0]) for k, v in stored.items()},
                            generations)
        timer = PhaseTimer(self.device)
        unedited = None
        with timer.phase("baseline"):
            model, tokenizer = self._load()
            key = self._baseline_key(model)
            cached = baseline_cache.load(self.plan.cache_dir, key) if key else None
            if cached is None:
                probe = self._probe(model, tokenizer, [])
                forward_before = probe.forward_seconds
                computed, unedited = self._compute_baseline(probe, records, needed)
                forward = probe.forward_seconds - forward_before
            else:
                computed, forward = cached, 0.0
                log.info("unedited model: its scores for this run, model, code and numerics "
                         "from the cache (%s)", self.plan.cache_dir / baseline_cache.FOLDER)
        self._note_session(store, "", resuming=False)
        timer.record("baseline_forward", 0, forward)
        del model
        if cached is None and key:
            baseline_cache.save(self.plan.cache_dir, key, computed)
        if unedited is not None:
            store.save_unedited_capability(self.run_id, unedited)
        store.save_base_predictions(self.run_id, computed.predictions)
        store.save_base_generations(self.run_id, computed.generations)
        if self.spec.gen_eval:
            store.save_sample_prompts(self.run_id, computed.prompts)
        store.set_baseline(self.run_id, computed.summary)
        store.record_timings(self.run_id, "", timer.drain())
        summary = computed.summary
        baseline = Baseline({(p, t): PairScore(acc, 0.0, len(ids), ids)
                             for p, t, ids, acc in computed.predictions}, computed.generations)
        log.info("unedited model: %s", ", ".join(f"{k}={v:.3f}" for k, v in summary.items()))
        if summary.get("pre_edit_accuracy", 1.0) < 0.5:
            log.warning("the unedited model gets only %.0f%% of the true answers right; "
                        "specificity against dataset answers will be low whatever the method",
                        100 * summary["pre_edit_accuracy"])
        return baseline

    def _baseline_key(self, model) -> str | None:
        """Where the unedited scores are cached (``baseline_cache.py``); None for a run with
        capability sets, or a model whose weights cannot be read here (offloaded)."""
        if self.capability_sets:
            return None
        try:
            fingerprint = model_fingerprint(model)
        except (RuntimeError, NotImplementedError):
            return None
        return baseline_cache.baseline_key(self.run_id, fingerprint, self.backend, package_code(),
                                           current_numerics(self.device))

    def _compute_baseline(self, probe: ProbeBackend, records: list[EditRecord],
                          needed: list[int]) -> tuple[baseline_cache.StoredBaseline, object]:
        """The unedited model's scores as the store keeps them, and its general-capability
        scores (None without capability sets)."""
        baseline = Baseline.compute(probe, records)
        # over the edits that are scored, as the metrics are
        summary = pre_edit_summary(probe, records)
        prompts = []
        if self.spec.gen_eval:
            baseline.generations = unedited_generations(probe, self.task, records,
                                                        self.spec.gen_max_tokens,
                                                        self.spec.gen_rule)
            prompts = unedited_prompts(probe, self.task, baseline.generations, self.records,
                                       needed, self.spec.gen_max_tokens, self.spec.gen_rule)
            summary.update(pre_edit_generated(probe, self.task, records,
                                              self.spec.gen_max_tokens, self.spec.gen_rule))
        unedited = (capability_accuracy(probe, self.capability_sets) if self.capability_sets
                    else None)
        predictions = [(p, t, s.predictions, s.token_accuracy)
                       for (p, t), s in baseline.predictions.items()]
        return (baseline_cache.StoredBaseline(predictions, baseline.generations, prompts, summary),
                unedited)

    def _note_session(self, store: ResultsStore, label: str, resuming: bool) -> None:
        """Store the kernels, threads and flags this stretch of work runs under
        (``core/numerics.py``); a resume under others says so, since its scores may then differ
        slightly from an uninterrupted run's."""
        now = {**current_numerics(self.device), "code": package_code()}
        before = store.record_session(self.run_id, label, now)
        change = numerics_difference(before, now) if resuming and before is not None else None
        if change:
            log.warning("%s: resumed under other numerics than its stored edits (%s); later scores "
                        "may differ slightly from an uninterrupted run's", label, change)

    def _run_method(self, store: ResultsStore, setup: MethodSetup, baseline: Baseline) -> str:
        state = store.cell(self.run_id, setup.label)
        if state is not None and state.status in ("done", "diverged"):
            log.info("%s: already %s in the store, skipped", setup.label, state.status)
            return state.status
        done = state.last_checkpoint if state is not None else 0
        store.start_cell(self.run_id, setup.label, config_dict(setup.config), setup.config_hash)
        timer = PhaseTimer(self.device)
        try:
            with MemoryMonitor(self.device) as memory:
                memory.reset()
                status = self._edit_stream(store, setup, baseline, done, self.snapshot_root(setup),
                                           timer, memory)
        except Exception as exc:  # one broken method must not stop the comparison
            message = (str(exc) if isinstance(exc, (SnapshotError, *EXPLAINED))
                       else f"{type(exc).__name__}: {exc}")
            # the disk, not the method: every later method would fail the same way
            if is_storage_error(exc):
                self._record_failure(store, setup, message)
                raise
            if isinstance(exc, ROUTINE_FAILURES):
                log.error("%s failed: %s", setup.label, message,
                          exc_info=log.isEnabledFor(logging.DEBUG))
            else:
                log.exception("%s failed", setup.label)
            self._record_failure(store, setup, message)
            return "failed"
        return status

    def _record_failure(self, store: ResultsStore, setup: MethodSetup, message: str) -> None:
        """Mark the method failed; if even that cannot be written (a full disk), say so in one line:
        the cell then stays 'running' and the next run resumes it from its last checkpoint."""
        try:
            store.finish_cell(self.run_id, setup.label, "failed", error=message)
        except (StoreError, OSError) as exc:
            log.error("%s failed, and recording the failure in %s failed too (%s); rerun the same "
                      "command to resume it", setup.label, store.path, exc)

    def _edit_stream(self, store, setup, baseline, done, snapshots, timer, memory) -> str:
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        with timer.phase("load"):
            model, tokenizer = self._load()
        ctx = EditContext(model=model, tokenizer=tokenizer, layout=ModelLayout.of(model),
                          device=self.device, cache_dir=self.cache_dir, task=self.task,
                          seed=self.seed, generator=generator,
                          train_records=self.train_records, trained_editor=setup.editor,
                          master_copies=self.spec.master_copy, prompt_format=self.prompt_format)
        method = setup.cls(setup.config, ctx)
        with timer.phase("prepare"):
            method.prepare()
        edited = method.edited_parameters()
        if done:
            checksums = store.snapshot_checksums(self.run_id, setup.label, done)
            state, masters = split_state(load_snapshot(snapshots, done, model, generator, checksums,
                                                       setup.label))
            method.load_state_dict(state)
            ctx.masters.load_state_dict(masters)
            log.info("%s: resuming after %d stored edits", setup.label, done)
            warn_if_passed(self.spec.save_model, done,
                           saved_model_folder(self.models_folder, self.run_id, setup.label,
                                              self.spec.save_model or 0))
        self._note_session(store, setup.label, resuming=bool(done))
        store.record_timings(self.run_id, setup.label, timer.drain())
        probe = self._method_probe(method, model, tokenizer, edited)
        # for the checkpoint lines' estimate of what is left
        self._stream_start = (time.monotonic(), done)
        bar = progress(total=self.edits, initial=done, desc=f"{setup.label} edits", unit="edit")
        try:
            for index, (start, end) in enumerate(self.batches):
                if end <= done:
                    continue
                with timer.phase("edit", index):
                    method.apply(self.records[start:end])
                bar.update(end - start)
                if not _finite(model, edited):
                    log.warning("%s diverged: non-finite weights after %d edits", setup.label, end)
                    store.record_timings(self.run_id, setup.label, timer.drain())
                    store.finish_cell(self.run_id, setup.label, "diverged", diverged_at=end)
                    return "diverged"
                if end in self.positions:
                    self._checkpoint(store, setup, baseline, probe, method, end, snapshots, timer,
                                     memory)
        finally:
            bar.close()
        store.finish_cell(self.run_id, setup.label, "done")
        prune_snapshots(snapshots, keep=self.edits)
        return "done"

    def _card(self, setup: MethodSetup, n_edits: int, rows) -> ModelCard:
        """The saved model's card: what was edited, how, by which run and code, and the mean of
        each metric the checkpoint stored."""
        values: dict[str, list[float]] = {}
        for row in rows:
            values.setdefault(row.metric, []).append(row.value)
        protocol = self.run_config.get("protocol")
        return ModelCard(
            base_model=str(self.model_source), method=setup.label, preset=setup.ref.preset,
            n_edits=n_edits, run_id=self.run_id, task=self.task.name,
            protocol=str(protocol.get("name") if isinstance(protocol, dict) else protocol),
            code=code_identity(), seed=self.seed, dataset_hash=self.plan.dataset_hash,
            scores={k: sum(v) / len(v) for k, v in values.items()})

    def _checkpoint(self, store, setup, baseline, probe, method, n_edits, snapshots, timer,
                    memory) -> None:
        capability = None
        forward_before = probe.forward_seconds
        with timer.phase("eval", n_edits):
            # a vLLM engine receives the edited tensors
            probe.sync(method.ctx.model, method.edited_parameters())
            positions = self.positions[n_edits]
            asked = ([pair for *_, pair in asked_answers(self.task, self.records, positions)]
                     if self.spec.gen_eval else [])
            # the answers are decoded on from the teacher-forced passes (drafts.py) where the
            # method leaves the model causal, position by position (drafts.draftable)
            with drafting(probe, asked, self.spec.gen_max_tokens, self.spec.gen_rule,
                          enabled=draftable(method)):
                scored = teacher_forced(probe, baseline, self.records, positions)
                rows, samples = scored.rows, []
                if self.spec.gen_eval:  # the answers are kept, beside both verdicts
                    answers = generate_answers(probe, self.task, baseline.generations,
                                               self.records, positions, self.spec.gen_max_tokens,
                                               self.spec.gen_rule)
                    rows += generated_rows(self.records, answers, self.spec.gen_rule)
                    samples = sample_rows(answers, scored.passed)
            rows += self.task.extra_metrics(probe, self.records, self.positions[n_edits])
            if self.capability_sets and n_edits in self.plan.capability_at:
                capability = capability_accuracy(probe, self.capability_sets)
        # the model's share of the evaluation, for overhead accounting
        timer.record("eval_forward", n_edits, probe.forward_seconds - forward_before)
        bad = [r for r in rows if not math.isfinite(r.value)]
        if bad:
            raise FloatingPointError(f"metric {bad[0].metric} of edit {bad[0].uid} is not finite")
        checksums = save_snapshot(snapshots, n_edits, method.ctx.model, method.edited_parameters(),
                                  {**method.state_dict(), **method.ctx.masters.state_dict()},
                                  method.ctx.generator)
        fault_point("after-snapshot")
        store.commit_checkpoint(self.run_id, setup.label, n_edits, rows, timer.drain(),
                                memory.peak_bytes(), capability=capability, snapshot=checksums,
                                samples=samples)
        fault_point("after-checkpoint")
        if n_edits == self.spec.save_model:
            save_edited_model(method.ctx.model, method.ctx.tokenizer,
                              saved_model_folder(self.models_folder, self.run_id, setup.label,
                                                 n_edits), self._card(setup, n_edits, rows))
        prune_snapshots(snapshots, keep=n_edits)
        started, first = self._stream_start
        elapsed = time.monotonic() - started
        left = elapsed / (n_edits - first) * (self.edits - n_edits) if n_edits > first else 0.0
        means = {r.metric: [] for r in rows if r.metric in ("efficacy_acc", "efficacy_gen_em")}
        for r in rows:
            if r.metric in means:
                means[r.metric].append(r.value)
        scores = ", ".join(f"{k} {sum(v) / len(v):.3f}" for k, v in means.items() if v)
        log.info("%s: %d of %d edits, checkpoint stored (%s); %.0f s so far, about %.0f s to go",
                 setup.label, n_edits, self.edits, scores or "no scores", elapsed, left)
