"""The shared shape of tasks read from files (ZsRE, CounterFact, FEVER, your own JSONL).

Each such task only says how one raw record becomes an :class:`EditRecord`; reading the source
(path, URL, datasets id), validating, lenient skipping and the train/eval split live here once.

Splits: ``eval`` is the ``--data`` file. ``train`` (for methods that learn) is
``--param TASK.train_data=...`` (the published train file), or, with
``--param TASK.train_fraction=F``, a seeded share F of the ``--data`` records chosen by a hash of
their ids (a group's records go together); those records are then left out of ``eval``. The runner
also checks that no train record shares an id or prompt with the edits it scores.
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.records import EditRecord
from ..core.sources import LoadReport, RecordError, Where, parse_all, read_source
from ..core.task import Task, TaskConfig


@dataclass(frozen=True)
class FileTaskConfig(TaskConfig):
    train_data: str | None = None  # path, URL or datasets id of the train split
    train_fraction: float = 0.0  # hold out this share of --data as the train split instead

    def __post_init__(self) -> None:
        if not 0.0 <= self.train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in [0, 1), got {self.train_fraction}")


def _in_train(uid: str, fraction: float) -> bool:
    bucket = int.from_bytes(hashlib.sha256(uid.encode()).digest()[:8], "big") / 2**64
    return bucket < fraction


class FileTask(Task):
    Config = FileTaskConfig
    #: where real users get the evaluation file when they pass no --data (None: --data is required)
    default_data: ClassVar[str | None] = None
    reads_data = True

    def __init__(self, options, config=None) -> None:
        super().__init__(options, config)
        self._cache: dict[str, list[EditRecord]] = {}
        self.load_reports: dict[str, LoadReport] = {}

    @abstractmethod
    def parse(self, obj: Any, where: Where) -> EditRecord | tuple[EditRecord, ...]:
        """One raw record of the published format -> an EditRecord (raise ``where.error`` if bad);
        a raw record holding several edits made together (an MQuAKE case) -> a tuple of them, one
        ``group``."""

    def read(self, data: str) -> list[EditRecord]:
        if data not in self._cache:
            raw = read_source(data, self.options.cache_dir)
            parsed, report = parse_all(raw, self.parse, self.options.lenient)
            records = [r for item in parsed for r in (item if isinstance(item, tuple) else (item,))]
            seen: dict[str, int] = {}
            for index, record in enumerate(records):
                if seen.setdefault(record.uid, index) != index:
                    raise RecordError(f"{raw.source}: uid {record.uid!r} appears more than once; "
                                      "every record needs its own")
            self._cache[data] = records
            self.load_reports[data] = report
        return self._cache[data]

    def _eval_source(self) -> str:
        data = self.options.data or self.default_data
        if data is None:
            raise ValueError(f"the {self.name} task needs --data PATH (a local file, URL or "
                             "datasets id)")
        return data

    def load(self, split: str) -> list[EditRecord]:
        config: FileTaskConfig = self.config  # type: ignore[assignment]
        records = self.read(self._eval_source())
        if split == "eval":
            if config.train_fraction:
                return [r for r in records
                        if not _in_train(r.group or r.uid, config.train_fraction)]
            return records
        if split == "train":
            if config.train_data:
                return self.read(config.train_data)
            if config.train_fraction:
                return [r for r in records if _in_train(r.group or r.uid, config.train_fraction)]
            raise ValueError(f"the {self.name} task has no train split: pass --param "
                             f"{self.name}.train_data=FILE (the published train file) or --param "
                             f"{self.name}.train_fraction=0.5 to hold out part of --data")
        raise ValueError(f"--split {split!r}: the {self.name} task has splits 'eval' and 'train'")

    def skipped_records(self) -> int:
        return sum(report.total for report in self.load_reports.values())
