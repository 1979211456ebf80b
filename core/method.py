"""The editing-method protocol and registry.

A method is one class behind a small protocol: a typed config dataclass, ``prepare`` for one-time
work (statistics, training, loading a trained editor) and ``apply`` that edits the live model in
place with one batch of records, keeping whatever lifelong state it needs between batches. A method
that learns also implements :class:`Trainable`. The runner calls only this protocol; it never names
a method. The implementations live in ``editbench.methods``, which registers them on import.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from .configs import build_config
from .costs import MethodCost, ModelShape, RunShape
from .models import ModelLayout
from .precision import MasterWeights
from .prompts import RAW, PromptFormat
from .records import EditRecord
from .registry import Registry
from .task import Task
from .tokenize import PairEncoder

METHODS: Registry[type[EditMethod]] = Registry("method", "editbench.methods")


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method's hyperparameters (``--param METHOD.FIELD=VALUE`` sets a field)."""


#: A model of at least this many parameters trains a learned editor on at most
#: ``LARGE_MODEL_TRAIN_RECORDS`` records unless ``max_train_records`` says otherwise: a training
#: step of RLEdit walks the whole train split (ZsRE's has 163k records) through the model, so time
#: grows with the split. 10,000 is the RLEdit release's one training sequence (400 batches of 20
#: = 8,000 records, ``config/config.yaml:6``) plus the 1,000 validation records held out
#: (``max_val_records``) and a margin.
LARGE_MODEL_PARAMETERS = 1_000_000_000
LARGE_MODEL_TRAIN_RECORDS = 10_000


@dataclass(frozen=True)
class TrainableConfig(MethodConfig):
    """Settings every learned editor shares."""

    #: train on a seeded sample of this many records of the train split; 0: all of them; none
    #: (the default): all of them, but at most LARGE_MODEL_TRAIN_RECORDS on a model of
    #: LARGE_MODEL_PARAMETERS or more (``train_record_cap``)
    max_train_records: int | None = None

    def __post_init__(self) -> None:
        if (self.max_train_records is not None
                and (self.max_train_records < 0 or self.max_train_records == 1)):
            raise ValueError("max_train_records must be 0 (all) or at least 2 (a train and a "
                             f"validation share), got {self.max_train_records}")

    def train_record_cap(self, n_parameters: int) -> tuple[int, str]:
        """How many train records at most (0: all) for a model of ``n_parameters``, and why."""
        if self.max_train_records is not None:
            return self.max_train_records, "max_train_records"
        if n_parameters >= LARGE_MODEL_PARAMETERS:
            return LARGE_MODEL_TRAIN_RECORDS, ("the default for models of "
                                               f"{LARGE_MODEL_PARAMETERS / 1e9:g}B parameters "
                                               f"or more, this one has {n_parameters / 1e9:.1f}B; "
                                               "max_train_records=0 trains on all")
        return 0, "max_train_records"


@dataclass
class EditContext:
    """Everything a method may use: the live model, how to tokenise, where to cache, the task."""

    model: nn.Module
    tokenizer: Any
    layout: ModelLayout
    device: torch.device
    cache_dir: Path
    task: Task  # its ``corpus()`` serves key statistics
    seed: int
    generator: torch.Generator
    #: The task's train split, checked by the runner to share no record with the edits evaluated.
    train_records: Callable[[], list[EditRecord]] = field(default=lambda: [])
    #: A trained editor the user supplied (``--editor METHOD=DIR``), else None.
    trained_editor: Path | None = None
    #: Keep float32 master copies of edited bf16/fp16 tensors (``core/precision.py``); off only to
    #: measure what rounding costs (``--no-master-copy``).
    master_copies: bool = True
    #: how prompts are shown to the model (``--prompt-format``): the encoder applies it to every
    #: (prompt, target) pair a method trains on, as the probes do when they score
    prompt_format: PromptFormat = RAW

    def __post_init__(self) -> None:
        self.encoder = PairEncoder(self.tokenizer, self.prompt_format)
        self.masters = MasterWeights(self.model, enabled=self.master_copies)

    def parameter(self, name: str) -> nn.Parameter:
        return self.model.get_parameter(name)

    def add_to_weight(self, module: str, delta_out_in: torch.Tensor) -> None:
        """Add an (out_features, in_features) update to ``module``'s weight, whatever its storage
        (GPT-2's Conv1D keeps it transposed), through the weight's float32 master copy."""
        delta = delta_out_in.T if self.layout.family.conv1d else delta_out_in
        self.masters.add(f"{module}.weight", delta)


class EditMethod(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    #: Named settings bundles, selected as ``METHOD@PRESET`` (e.g. ``rledit@release``); each maps
    #: config fields to values and is stored with the results under that label.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: For a preset named after an architecture, the checkpoint its release tuned it for, where the
    #: release names one (``"Meta-Llama-3-8B-Instruct (hparams/llama3-8b.yaml)"``). Architectures
    #: are recognised by their config's shape (``core/architectures.py``), so every checkpoint of
    #: that shape (base, Instruct, a later point release) gets the preset: the notes that say a
    #: preset was picked, and ``editbench list --presets``, name this checkpoint.
    preset_checkpoints: ClassVar[dict[str, str]] = {}
    #: Scoring backends that see what the method does. A vLLM engine only receives the weights named
    #: by ``edited_parameters``, so a method that changes the forward computation (a hook or a
    #: wrapped module: GRACE, WISE) lists "hf" alone, and the runner scores it with HF (and says
    #: so).
    scoring_backends: ClassVar[tuple[str, ...]] = ("hf", "vllm")
    #: True for a method that edits what the model is shown (retrieval): every probe call then
    #: passes its prompts through :meth:`scoring_prompt` first.
    rewrites_prompts: ClassVar[bool] = False

    def __init__(self, config: MethodConfig, context: EditContext) -> None:
        self.config = config
        self.ctx = context

    def prepare(self) -> None:
        """One-time work before the first edit; the default has none."""

    @abstractmethod
    def apply(self, batch: Sequence[EditRecord]) -> None:
        """Edit the model in place so that it holds every record of ``batch``."""

    @abstractmethod
    def edited_parameters(self) -> list[str]:
        """Names of the model parameters this method may change (snapshots and weight sync use
        it)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Lifelong state that must survive a resume (accumulated statistics, say)."""
        return {}

    def requirements(self) -> list[str]:
        """What this method needs that is missing, each a one-line fix, checked before any model is
        loaded (the runner builds the method on a ``meta``-device model to ask); none by default."""
        return []

    def cost(self, shape: ModelShape, run: RunShape) -> MethodCost | None:
        """Resident memory and each phase's transient memory and work, from the formulas of
        ``core/costs.py`` (a run's plan builds the method on a ``meta``-device model to ask);
        None where the method has no cost model yet, which the plan says."""
        return None

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"{self.name} keeps no lifelong state but a snapshot holds "
                             f"{sorted(state)}")

    def scoring_prompt(self, prompt: str) -> str:
        """The prompt as the edited system presents it to the model at scoring time (only called
        when ``rewrites_prompts``). A method that installs forward hooks installs them in
        ``prepare`` and keeps them across ``load_state_dict``, which only refills their state
        after a resume."""
        return prompt


def text_state(value: Any) -> torch.Tensor:
    """JSON-serialisable lifelong state (stored prompts, labels) as a byte tensor, since snapshots
    hold tensors only (safetensors); :func:`state_text` reads it back."""
    import json

    return torch.tensor(list(json.dumps(value).encode("utf-8")), dtype=torch.uint8)


def state_text(tensor: torch.Tensor) -> Any:
    import json

    return json.loads(bytes(tensor.tolist()).decode("utf-8"))


@runtime_checkable
class Trainable(Protocol):
    """A method that learns before it edits (the hypernetworks). ``fit`` trains on ``records`` into
    ``folder`` (resumable) and leaves the model as it found it; ``editbench train`` calls it, and
    ``prepare`` calls it when no trained editor is cached. Its ``Config`` is a
    :class:`TrainableConfig`."""

    def fit(self, folder: Path, records: Sequence[EditRecord]) -> None: ...


class MethodSetupError(ValueError):
    """What a method was handed cannot serve it: a trained editor's folder that holds none or
    belongs to another model or setting, key statistics or a projection file that are missing or
    not what they claim, a corpus that cannot be read. The runner records the method as failed
    with this one line and goes on; the traceback is shown only with ``--debug``."""


def is_trainable(cls: type[EditMethod]) -> bool:
    return issubclass(cls, Trainable)


def picked_preset_note(label: str, name: str, architecture: str,
                       checkpoint: str | None) -> str:
    """What a run says when it takes the preset named after ``architecture``: the checkpoint the
    release tuned it for, where known, since any model of that shape is matched."""
    note = (f"{label}: taking the settings published for {architecture} "
            f"(preset {name}@{architecture})")
    if checkpoint:
        note += (f", which the release tuned for {checkpoint}; every {architecture}-shaped "
                 "checkpoint is matched")
    return note


def _as_text(value: Any) -> str:
    """A preset value as ``--param`` would spell it (presets and the command line share one
    parser)."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


@dataclass(frozen=True)
class MethodRef:
    """A method as the user names it: ``NAME`` or ``NAME@PRESET``; ``label`` is what the store and
    the reports call it. Parsed here once for ``run``, ``train`` and ``bench``."""

    label: str
    name: str
    preset: str | None = None

    @classmethod
    def parse(cls, label: str) -> MethodRef:
        name, at, preset = label.strip().partition("@")
        if not name or (at and not preset):
            raise ValueError(f"method {label!r}: expected NAME or NAME@PRESET, e.g. rledit@release")
        return cls(label.strip(), name, preset or None)

    @property
    def cls(self) -> type[EditMethod]:
        """The registered class (a KeyError lists the registered methods)."""
        return METHODS[self.name]

    def config(self, params: Mapping[str, Mapping[str, str]],
               architecture: str | None = None) -> MethodConfig:
        """The method's settings, each layer over the one before: its defaults; the preset named
        after ``architecture`` (the published model the run edits, ``core/architectures.py``),
        where the method has one; the preset the label names; ``--param NAME.FIELD``;
        ``--param NAME@PRESET.FIELD``."""
        cls = self.cls
        if self.preset is not None and self.preset not in cls.presets:
            known = ", ".join(sorted(cls.presets)) or "none"
            raise ValueError(f"method {self.label!r}: {self.name} has no preset {self.preset!r} "
                             f"(presets: {known})")
        overrides = {k: _as_text(v) for k, v in cls.presets.get(architecture or "", {}).items()}
        overrides.update({k: _as_text(v)
                          for k, v in cls.presets.get(self.preset or "", {}).items()})
        overrides.update(params.get(self.name, {}))
        if self.label != self.name:
            overrides.update(params.get(self.label, {}))
        return build_config(cls.Config, overrides, owner=f"method {self.label}")
