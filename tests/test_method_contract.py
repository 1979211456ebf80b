"""The method contract, checked on every registered method (the registry, not a list).

A lifelong run trusts three things of every method that the runner cannot check for itself:

1. **Same seed, same result.** Randomness comes from ``ctx.generator`` alone: two fresh copies of
   the model edited with the same records in the same batches under the same seed end with the
   same edited tensors, the same ``state_dict()`` and the same logits, bit for bit, whatever the
   global generators hold. The runner restores torch's CPU generator on a resume but never the
   CUDA, Python or NumPy ones, so here every global generator is set differently for each run.
   A learned editor's ``fit`` (which ``prepare`` runs when nothing is cached) writes the same
   files under the same seed.
2. **A resume equals an uninterrupted run.** What ``Runner._checkpoint`` snapshots (the edited
   tensors, ``state_dict()``, the master copies, the generators) and ``Runner._edit_stream`` loads
   into a fresh model and method continues exactly: the remaining batches end where a run that was
   never stopped ends (edited tensors, state, master copies, logits), in float32 and in bf16.
3. **Updates survive bf16.** On a bf16 model with master copies on (``core/precision.py``),
   ``prepare`` leaves the weights and any master copy as loaded; after the edits every parameter
   that changed is declared in ``edited_parameters()`` and is the rounding of its float32 master
   copy, so each write went through ``ctx.add_to_weight`` (or ``MasterWeights``) and no small
   update rounded away. A method that edits through hooks, side memory or the prompt (GRACE, WISE,
   retrieval) declares no edited parameters and must leave every weight as it was. A method that
   writes ``param.data += delta`` fails (the last tests show that each check catches its fault).

Each method runs on micro models built from a config (``conftest.micro_llama``; ``micro_gpt2`` too
for rule 3, whose Conv1D weights lie transposed) with eight edits of a tiny pocket world in four
batches. ``SETTINGS`` keeps each run to about a second; a method it does not name runs with its
defaults, and a learned editor (:class:`Trainable`) with ``TINY_TRAINING``. A method that says what
it lacks here (``requirements()``) is skipped with that reason.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from editbench.core.configs import config_dict, config_hash
from editbench.core.method import MethodConfig, MethodRef, TrainableConfig, is_trainable
from editbench.core.models import ModelLayout, load_model
from editbench.core.precision import split_state
from editbench.core.records import EditRecord
from editbench.core.snapshot import load_snapshot, save_snapshot
from editbench.core.task import TaskOptions
from editbench.harness.running.threads import fit_threads_to_model
from editbench.methods import METHODS, EditContext, EditMethod
from editbench.tasks.pocket import PocketConfig, PocketTask

CPU = torch.device("cpu")
SEED = 0
EDITS, BATCH, RESUME_AFTER = 8, 2, 2  # four batches; the snapshot is taken after the second

#: per method, ``--param`` settings that keep one run to about a second on the micro model
SETTINGS: dict[str, dict[str, str]] = {
    "ft-l": {"steps": "5"},
    "ft-m": {"steps": "5"},
    "locft-bf": {"steps": "5", "chunk": "1"},  # one record per step: the seeded shuffle matters
    "grace": {"n_iter": "3"},
    # a shard every three edits and a merge every six: the run crosses both, and the snapshot
    # after four edits falls inside a shard
    "wise": {"n_iter": "3", "n_templates": "1", "save_freq": "3", "merge_freq": "6"},
    # a generated context prefix: lifelong state that a resume restores
    "memit": {"v_steps": "5", "mom2_n_samples": "200", "context_prefixes": "1",
              "context_prefix_tokens": "3"},
    "alphaedit": {"v_steps": "5", "mom2_n_samples": "200"},
    "rect": {"v_steps": "5", "mom2_n_samples": "200"},
    # a small mom2 weight: updates past the micro weights' largest singular value, so the
    # restraint and the unrestrained sum it keeps are exercised
    "prune": {"v_steps": "5", "mom2_n_samples": "200", "mom2_update_weight": "1"},
    # the releases' normaliser, updated by every edit: lifelong state (MEND keeps the default)
    "malmen": {"update_normaliser_at_edit": "true"},
    "rledit": {"update_normaliser_at_edit": "true"},
    "lora-ft": {"epochs": "3"},
}
#: the smallest training of a learned editor that still takes an optimiser step: a rank-8
#: network, batches of two, one step, eight train records (each field where its Config has it)
TINY_TRAINING = {"rank": "8", "n_blocks": "1", "train_batch": "2", "max_steps": "1",
                 "val_every": "1", "patience": "10", "max_train_records": "8"}

REGISTERED = METHODS.names()


def settings(name: str) -> dict[str, str]:
    cls = METHODS[name]
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    tiny = {k: v for k, v in TINY_TRAINING.items() if k in fields} if is_trainable(cls) else {}
    return {**tiny, **SETTINGS.get(name, {})}


def registered(name: str) -> tuple[type[EditMethod], MethodConfig]:
    """The class and config of a registered method, built as ``--param`` settings are."""
    ref = MethodRef.parse(name)
    return ref.cls, ref.config({name: settings(name)})


def scramble_global_generators(salt: int) -> None:
    """Give Python's, NumPy's and torch's global generators a state of this run's own."""
    random.seed(salt)
    np.random.seed(salt)
    torch.manual_seed(salt)  # the CUDA generators too, where there are any


@dataclass
class Bench:
    """What the runs of one model share: its folder, the task and edits, a cache (key statistics,
    editors trained in ``prepare``) and the folders ``fit`` trained (``--editor``), by config."""

    model: Path
    task: PocketTask
    records: list[EditRecord]
    cache: Path
    editors: dict[str, Path] = field(default_factory=dict)

    def batches(self, start: int = 0, stop: int | None = None) -> list[Sequence[EditRecord]]:
        return [self.records[i:i + BATCH] for i in range(0, EDITS, BATCH)[start:stop]]

    def context(self, dtype: torch.dtype, editor: Path | None = None) -> EditContext:
        """A freshly loaded model in a context as ``Runner._edit_stream`` builds it."""
        model, tokenizer = load_model(self.model, CPU, dtype)
        fit_threads_to_model(model, CPU)  # one thread for a micro model, as Runner._load sets
        if dtype == torch.bfloat16:
            # torch 2.13's CPU flash attention fails in bf16 from 64 positions on ("pack_vnni2 is
            # only supported when avx512 is supported") under ATEN_CPU_CAPABILITY=avx2 on a CPU
            # with AMX; retrieval's prompts reach that length
            model.set_attn_implementation("eager")
        task = self.task
        return EditContext(model=model, tokenizer=tokenizer, layout=ModelLayout.of(model),
                           device=CPU, cache_dir=self.cache, task=task, seed=SEED,
                           generator=torch.Generator().manual_seed(SEED),
                           train_records=lambda: task.load("train"), trained_editor=editor,
                           master_copies=True)

    def start(self, cls: type[EditMethod], config: MethodConfig, dtype: torch.dtype) -> EditMethod:
        """A prepared method on a fresh model; a learned editor loads its trained folder."""
        editor = self.editor(cls, config) if is_trainable(cls) else None
        method = cls(config, self.context(dtype, editor))
        prepare(method)
        return method

    def editor(self, cls: type[EditMethod], config: MethodConfig) -> Path:
        """The folder ``fit`` trains for ``config`` on the float32 model (trained on first use)."""
        assert isinstance(config, TrainableConfig)
        folder = self.cache / f"{cls.name}-{config_hash(config_dict(config))}"
        if folder.name not in self.editors:
            ctx = self.context(torch.float32)
            cls(config, ctx).fit(folder, ctx.train_records())  # type: ignore[attr-defined]
            self.editors[folder.name] = folder
        return self.editors[folder.name]


@pytest.fixture(scope="module")
def benches(micro_llama, micro_gpt2, tmp_path_factory) -> Iterator[dict[str, Bench]]:
    task = PocketTask(TaskOptions(), PocketConfig(n_entities=20))
    records = task.load("eval")[:EDITS]
    assert len(records) == EDITS
    threads = torch.get_num_threads()
    yield {family: Bench(path, task, records, tmp_path_factory.mktemp(f"contract-{family}"))
           for family, path in (("llama", micro_llama), ("gpt2", micro_gpt2))}
    torch.set_num_threads(threads)  # as it was before Bench.context fitted it to the micro models


@pytest.fixture(scope="module")
def bench(benches) -> Bench:
    return benches["llama"]


def prepare(method: EditMethod) -> None:
    """``prepare``, or a skip naming what the method lacks here (``requirements()``, which the
    runner asks before it loads a model)."""
    missing = method.requirements()
    if missing:
        pytest.skip("; ".join(missing))
    method.prepare()


def apply(method: EditMethod, batches: Sequence[Sequence[EditRecord]], salt: int) -> EditMethod:
    scramble_global_generators(salt)
    for batch in batches:
        method.apply(batch)
    return method


def edited_tensors(method: EditMethod) -> dict[str, torch.Tensor]:
    return {name: method.ctx.parameter(name).detach() for name in method.edited_parameters()}


def answers(method: EditMethod, records: Sequence[EditRecord]) -> dict[str, torch.Tensor]:
    """The edited system's logits on each record's prompt, first paraphrase and first neighbour,
    through ``scoring_prompt`` where the method rewrites prompts: what is scored, hooks and side
    memories included."""
    pairs = []
    for r in records:
        pairs += [(r.prompt, r.target_new), *((p, r.target_new) for p in r.paraphrases[:1]),
                  *((n.prompt, n.answer) for n in r.neighbours[:1])]
    if method.rewrites_prompts:
        pairs = [(method.scoring_prompt(prompt), target) for prompt, target in pairs]
    ctx = method.ctx
    batch = ctx.encoder.collate(ctx.encoder.encode_many(pairs)).to(ctx.device)
    with torch.no_grad():
        logits = ctx.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    return {"logits": logits}


def clones(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in tensors.items()}


def identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def assert_same(got: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                what: str) -> None:
    """Bitwise equality of two name -> tensor maps, naming the first tensor that differs."""
    assert sorted(got) == sorted(expected), f"{what}: {sorted(got)} != {sorted(expected)}"
    for name in expected:
        a, b = got[name], expected[name]
        assert identical(a, b), \
            f"{what}: {name} differs ({a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)})"


# -- the rules, as functions of a method class and its config -------------------------------------
def check_same_seed_same_result(bench: Bench, cls: type[EditMethod], config: MethodConfig) -> None:
    first = bench.start(cls, config, torch.float32)
    weights, state = clones(edited_tensors(first)), clones(first.state_dict())
    apply(first, bench.batches(), salt=1)
    edited = edited_tensors(first)
    assert edited.keys() == weights.keys(), "edited_parameters() changed while editing"
    assert not (all(identical(edited[k], weights[k]) for k in edited)
                and first.state_dict().keys() == state.keys()
                and all(identical(v, state[k]) for k, v in first.state_dict().items())), \
        "the edits changed neither a weight nor the lifelong state: nothing to compare"
    second = apply(bench.start(cls, config, torch.float32), bench.batches(), salt=2)
    assert_same(edited_tensors(second), edited, "edited parameters")
    assert_same(second.state_dict(), first.state_dict(), "state_dict()")
    assert_same(answers(second, bench.records), answers(first, bench.records), "answers")


def check_resume_equals_uninterrupted(bench: Bench, cls: type[EditMethod], config: MethodConfig,
                                      dtype: torch.dtype, snapshots: Path) -> None:
    straight = apply(bench.start(cls, config, dtype), bench.batches(), salt=1)

    stopped = apply(bench.start(cls, config, dtype), bench.batches(0, RESUME_AFTER), salt=2)
    done = RESUME_AFTER * BATCH
    ctx = stopped.ctx
    save_snapshot(snapshots, done, ctx.model, stopped.edited_parameters(),
                  {**stopped.state_dict(), **ctx.masters.state_dict()}, ctx.generator)
    del stopped, ctx

    resumed = bench.start(cls, config, dtype)
    ctx = resumed.ctx
    state, masters = split_state(load_snapshot(snapshots, done, ctx.model, ctx.generator))
    resumed.load_state_dict(state)
    ctx.masters.load_state_dict(masters)
    apply(resumed, bench.batches(RESUME_AFTER), salt=3)

    assert_same(edited_tensors(resumed), edited_tensors(straight), "edited parameters")
    assert_same(resumed.state_dict(), straight.state_dict(), "state_dict()")
    assert_same(ctx.masters.state_dict(), straight.ctx.masters.state_dict(), "master copies")
    assert_same(answers(resumed, bench.records), answers(straight, bench.records), "answers")


def check_updates_survive_bf16(bench: Bench, cls: type[EditMethod], config: MethodConfig) -> None:
    ctx = bench.context(torch.bfloat16)  # no --editor: a learned editor trains in prepare, on it
    model, masters = ctx.model, ctx.masters
    loaded = clones(dict(model.named_parameters()))
    method = cls(config, ctx)
    prepare(method)
    moved = sorted(name for name, p in model.named_parameters() if not torch.equal(p, loaded[name]))
    assert not moved, f"prepare changed {moved}"
    stale = sorted(name for name, copy in masters.copies.items()
                   if not torch.equal(copy, loaded[name].float()))
    assert not stale, (f"prepare left master copies of {stale} that are not the loaded weights: "
                       "the first edit would write what they hold into the model")

    apply(method, bench.batches(), salt=1)
    declared = set(method.edited_parameters())
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, loaded[name])}
    assert changed <= declared, \
        f"changed parameters outside edited_parameters(): {sorted(changed - declared)}"
    assert set(masters.copies) <= declared, \
        f"master copies of undeclared parameters: {sorted(set(masters.copies) - declared)}"
    untracked = sorted(changed - set(masters.copies))
    assert not untracked, (f"{untracked} changed without a float32 master copy: written directly, "
                           "not through ctx.add_to_weight, so bf16 rounds small updates away")
    for name, master in masters.copies.items():
        weight = model.get_parameter(name)
        assert torch.equal(weight, master.to(weight.dtype)), \
            f"{name} is not its master copy rounded: a write bypassed ctx.add_to_weight"
    assert masters.copies or not declared, \
        f"declares {sorted(declared)} but wrote none of them: nothing to check (edit more)"


# -- every registered method -----------------------------------------------------------------------
def test_every_registered_class_carries_its_registered_name():
    assert REGISTERED, "no method is registered"
    for name, cls in METHODS.items():
        assert cls.name == name, f"{cls.__qualname__} is registered as {name!r} but is {cls.name!r}"
        assert issubclass(cls, EditMethod) and issubclass(cls.Config, MethodConfig)


def test_settings_name_registered_methods_and_their_fields():
    """A stale entry would leave a method on its defaults without a word."""
    for name in SETTINGS:
        assert name in METHODS, f"SETTINGS names {name!r}, which is not registered"
        registered(name)  # every field exists and its value parses


@pytest.mark.parametrize("name", REGISTERED)
def test_same_seed_same_result(bench, name):
    check_same_seed_same_result(bench, *registered(name))


@pytest.mark.parametrize("name", [name for name in REGISTERED if is_trainable(METHODS[name])])
def test_same_seed_same_trained_editor(bench, name, tmp_path):
    cls, config = registered(name)
    written = []
    for salt in (1, 2):
        ctx, folder = bench.context(torch.float32), tmp_path / str(salt)
        scramble_global_generators(salt)
        cls(config, ctx).fit(folder, ctx.train_records())  # type: ignore[attr-defined]
        written.append({p.relative_to(folder): p.read_bytes() for p in folder.rglob("*")
                        if p.is_file()})
    assert written[0].keys() == written[1].keys()
    differing = sorted(str(path) for path in written[0] if written[0][path] != written[1][path])
    assert not differing, f"two fits under the same seed wrote different {differing}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bf16"])
@pytest.mark.parametrize("name", REGISTERED)
def test_a_resume_equals_an_uninterrupted_run(bench, name, dtype, tmp_path):
    check_resume_equals_uninterrupted(bench, *registered(name), dtype, tmp_path / "snapshots")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("name", REGISTERED)
def test_updates_survive_bf16(benches, name, family):
    check_updates_survive_bf16(benches[family], *registered(name))


# -- each check catches the fault it is for --------------------------------------------------------
class _Nudge(EditMethod):
    """Adds a small seeded random matrix to one MLP output projection per batch, through its
    master copy: it keeps the contract; each subclass below breaks it in one way."""

    name = "nudge"
    description = "test-only"

    def module(self) -> str:
        return self.ctx.layout.mlp_out_name(0)

    def edited_parameters(self) -> list[str]:
        return [f"{self.module()}.weight"]

    def delta(self) -> torch.Tensor:
        shape = self.ctx.parameter(f"{self.module()}.weight").shape
        return 1e-3 * torch.randn(shape, generator=self.ctx.generator)

    def apply(self, batch: Sequence[EditRecord]) -> None:
        self.ctx.add_to_weight(self.module(), self.delta())


class _DirectWrite(_Nudge):
    def apply(self, batch: Sequence[EditRecord]) -> None:
        self.ctx.parameter(f"{self.module()}.weight").data += self.delta()


class _DirectWriteAfterMaster(_Nudge):
    """Takes the master copy, then writes the model around it."""

    def apply(self, batch: Sequence[EditRecord]) -> None:
        self.ctx.masters.master(f"{self.module()}.weight")
        self.ctx.parameter(f"{self.module()}.weight").data += self.delta()


class _Undeclared(_Nudge):
    def edited_parameters(self) -> list[str]:
        return []


class _StaleMaster(_Nudge):
    """Trains in ``prepare`` through the master copy, then puts the weight back around it (what the
    hypernetworks' trainer did before its reset restored the master copies too)."""

    def prepare(self) -> None:
        weight = self.ctx.parameter(f"{self.module()}.weight")
        loaded = weight.detach().clone()
        self.ctx.add_to_weight(self.module(), self.delta())
        weight.data.copy_(loaded)


class _GlobalRandom(_Nudge):
    def delta(self) -> torch.Tensor:
        return 1e-3 * torch.randn(self.ctx.parameter(f"{self.module()}.weight").shape)


class _Forgetful(_Nudge):
    """Lifelong state (the batches seen, scaling each update) that ``state_dict`` leaves out."""

    def __init__(self, config: MethodConfig, context: EditContext) -> None:
        super().__init__(config, context)
        self.seen = 0

    def delta(self) -> torch.Tensor:
        self.seen += 1
        return self.seen * super().delta()


def test_the_checks_pass_a_method_that_keeps_the_contract(bench, tmp_path):
    check_same_seed_same_result(bench, _Nudge, MethodConfig())
    check_resume_equals_uninterrupted(bench, _Nudge, MethodConfig(), torch.bfloat16, tmp_path)
    check_updates_survive_bf16(bench, _Nudge, MethodConfig())


@pytest.mark.parametrize("cls, message", [
    (_DirectWrite, "without a float32 master copy"),
    (_DirectWriteAfterMaster, "not its master copy rounded"),
    (_Undeclared, "outside edited_parameters"),
    (_StaleMaster, "prepare left master copies"),
])
def test_a_write_around_add_to_weight_fails_the_bf16_check(bench, cls, message):
    with pytest.raises(AssertionError, match=message):
        check_updates_survive_bf16(bench, cls, MethodConfig())


def test_global_randomness_fails_the_same_seed_check(bench):
    with pytest.raises(AssertionError, match="edited parameters"):
        check_same_seed_same_result(bench, _GlobalRandom, MethodConfig())


def test_state_left_out_of_the_snapshot_fails_the_resume_check(bench, tmp_path):
    with pytest.raises(AssertionError, match="edited parameters"):
        check_resume_equals_uninterrupted(bench, _Forgetful, MethodConfig(), torch.float32,
                                          tmp_path)
