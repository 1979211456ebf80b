"""The task protocol and registry.

A task is data plus a few declared choices (inspect_ai's ``Task``, lm-eval's YAML tasks): it yields
typed :class:`EditRecord` s for a split, names the metric variants it reports, and may name a
model that suits it (the pocket world builds its own). The runner never names a task: it asks the
registry for the one the user named, or for the one that declared itself the default.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from .records import EditRecord, Metric, ScoreRow
from .registry import Registry

if TYPE_CHECKING:
    from .probe import ProbeBackend

TASKS: Registry[type[Task]] = Registry("task", "editbench.tasks")


@dataclass(frozen=True)
class TaskOptions:
    """What the command line says about the data, whatever the task."""

    data: str | None = None  # local path, URL or hub id, where the task reads a file
    split: str = "eval"
    limit: int | None = None
    cache_dir: Path | None = None
    lenient: bool = False  # skip (and count) malformed records instead of stopping


@dataclass(frozen=True)
class TaskConfig:
    """Task-specific settings; subclasses add fields (``--param TASK.FIELD=VALUE``)."""


class Task(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[TaskConfig]] = TaskConfig
    #: the task's own metric variants, beyond the core ones the runner computes for every task
    metrics: ClassVar[tuple[Metric, ...]] = ()
    #: what each named locality set of the task's records holds (``EditRecord.locality``), for the
    #: catalogue's descriptions of ``locality_<set>_agree``/``_acc``
    locality_descriptions: ClassVar[dict[str, str]] = {}
    #: whether the task reads ``--data`` (a task that makes its records, as pocket does, would
    #: otherwise ignore the file silently)
    reads_data: ClassVar[bool] = False

    def __init__(self, options: TaskOptions, config: TaskConfig | None = None) -> None:
        self.options = options
        self.config = config if config is not None else self.Config()

    @abstractmethod
    def load(self, split: str) -> list[EditRecord]:
        """All records of ``split`` in the source's order (``limit`` is applied by
        :meth:`records`)."""

    def records(self, split: str | None = None) -> list[EditRecord]:
        chosen = self.load(split or self.options.split)
        return chosen[: self.options.limit] if self.options.limit is not None else chosen

    def default_model(self, build: bool = True) -> str | None:
        """A model that suits this task when the user names none (None: ``--model`` is required).
        With ``build=False`` only where it is or will be: resolving a run builds nothing."""
        return None

    def default_edits(self) -> int:
        return 100

    @classmethod
    def sized_for(cls, edits: int) -> dict[str, str]:
        """Settings (``--param`` values) under which the task has at least ``edits`` records to
        edit, for benchmarks that need a given size. A task read from a file has what it has:
        none."""
        return {}

    def corpus(self) -> list[str] | None:
        """Plain text that resembles what the model was trained on, for key statistics
        (MEMIT's second moments). None: methods fall back to their published corpus (wikitext)."""
        return None

    def generation_prompt(self, prompt: str) -> str:
        """The prompt as the generated metrics feed it to the model (a task may wrap a question as
        "Question: ... Answer:"); the teacher-forced metrics use the prompt as it is."""
        return prompt

    def skipped_records(self) -> int:
        """Records a lenient load left out (stored with the run, so a result says what it
        covers)."""
        return 0

    def extra_metrics(self, probe: ProbeBackend, records: list[EditRecord],
                      positions: list[int]) -> list[ScoreRow]:
        """Task-specific metrics for the edits at ``positions``; the core ones are the runner's.
        The default adds none."""
        return []
