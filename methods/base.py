"""The editing-method protocol and registry.

A method is one class behind a small protocol: a typed config dataclass, ``prepare`` for one-time
work (statistics, training, loading a checkpoint) and ``apply`` that edits the live model in place
with one batch of records, keeping whatever lifelong state it needs between batches. The runner
calls only this protocol; it never names a method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..harness.models import ModelLayout
from ..harness.records import EditRecord
from ..harness.registry import Registry
from ..harness.tokenize import PairEncoder

METHODS: Registry[type[EditMethod]] = Registry("method", "editbench.methods")


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method's hyperparameters (``--param METHOD.FIELD=VALUE`` sets a field)."""


@dataclass
class EditContext:
    """Everything a method may use: the live model, how to tokenise, where to cache, the task."""

    model: nn.Module
    tokenizer: Any
    layout: ModelLayout
    device: torch.device
    cache_dir: Path
    task: Any  # the Task (its ``corpus()`` serves key statistics)
    seed: int
    generator: torch.Generator
    #: The task's train split, checked by the runner to share no record with the edits evaluated.
    train_records: Callable[[], list[EditRecord]] = field(default=lambda: [])
    #: A trained artefact the user supplied (``--method-checkpoint METHOD=DIR``), else None.
    method_checkpoint: Path | None = None

    def __post_init__(self) -> None:
        self.encoder = PairEncoder(self.tokenizer)

    def parameter(self, name: str) -> nn.Parameter:
        return self.model.get_parameter(name)


class EditMethod(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    #: True when ``prepare`` needs the network (a published checkpoint, a hub corpus).
    needs_download: ClassVar[bool] = False
    #: Named settings bundles, selected as ``METHOD@PRESET`` (e.g. ``rledit@release``); each maps
    #: config fields to values and is stored with the results under that label.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}

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
        """Names of the model parameters this method may change (snapshots and weight sync use it)."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Lifelong state that must survive a resume (accumulated statistics, say)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(f"{self.name} keeps no lifelong state but a snapshot holds {sorted(state)}")
