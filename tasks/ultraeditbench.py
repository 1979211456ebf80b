"""UltraEditBench (Gu et al., UltraEdit, arXiv 2505.14679): over two million ZsRE-style edits in one
801 MB JSON list, read as a stream.

Layout, as the release reads it (XiaojieGu/UltraEdit 0beb222 ``data/ultraeditbench.py:14-19``):
``prompt`` (the question, edited), ``rephrase_prompt`` (its paraphrase), ``ans`` (the new answer),
``loc``/``loc_ans`` (an unrelated question and its answer). A record names no subject; an optional
``subject`` is used where present, else the whole prompt stands in for it (as FEVER's claims do).
The release opens ``UltraEditBench_2M.json`` with ``json.load`` and keeps its first
``n_edits * num_seq`` records (``data/base.py:24-27``; 100 x 200 = 20,000 in
``config/dataset/ultraeditbench.yaml``).

editbench never holds the file: :func:`~editbench.core.sources.iter_json_records` reads it a chunk
at a time, each record is checked as it comes, and only the records a run can edit are kept:
``--param ultraeditbench.take=N`` (default 20,000, the release's count; 0 keeps every record, two
million of them). Records after the first ``take`` are not read, so not checked either.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from ..core.records import EditRecord, Neighbour
from ..core.sources import (
    Fields,
    LoadReport,
    RecordError,
    Where,
    iter_json_records,
    local_file,
    parse_one,
    warn_load,
)
from ..core.task import TASKS
from .filetask import FileTask, FileTaskConfig


@dataclass(frozen=True)
class UltraEditBenchConfig(FileTaskConfig):
    #: records kept from the front of the file (the release's n_edits x num_seq); 0: all of them
    take: int = 20000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.take < 0:
            raise ValueError(f"take must be 0 (every record) or a positive count, got {self.take}")


def parse_ultraeditbench(obj, where: Where) -> EditRecord:
    fields = Fields(obj, where)
    prompt = fields.str("prompt")
    return EditRecord(
        uid=f"{Path(where.source).name}#{where.index}",
        prompt=prompt,
        subject=fields.str("subject") if fields.has("subject") else prompt,
        target_new=fields.str("ans"),
        paraphrases=(fields.str("rephrase_prompt"),),
        neighbours=(Neighbour(fields.str("loc"), fields.str("loc_ans")),),
    )


def stream(path: Path, lenient: bool = False, report: LoadReport | None = None,
           source: str | None = None, chunk_size: int = 1 << 20) -> Iterator[EditRecord]:
    """Every record of an UltraEditBench file, one at a time, in file order; memory stays that of
    one chunk and one record however long the file is. The unused-field warning (and, lenient, the
    skipped records) is logged when the stream ends or is closed."""
    report = report if report is not None else LoadReport()
    unused: Counter = Counter()
    name = source or str(path)
    try:
        for where, obj in iter_json_records(path, name, chunk_size):
            try:
                yield parse_one(obj, where, parse_ultraeditbench, unused)
            except RecordError as error:
                if not lenient:
                    raise
                report.add(error)
    finally:
        warn_load(name, report, unused)


@TASKS.register("ultraeditbench")
class UltraEditBenchTask(FileTask):
    name = "ultraeditbench"
    description = ("UltraEditBench (UltraEdit's 2M ZsRE-style edits: prompt, rephrase_prompt, ans, "
                   "loc, loc_ans), streamed; keeps the first ultraeditbench.take (20,000); needs "
                   "--data")
    Config = UltraEditBenchConfig

    def parse(self, obj, where: Where) -> EditRecord:
        return parse_ultraeditbench(obj, where)

    def read(self, data: str) -> list[EditRecord]:
        if data not in self._cache:
            path = local_file(data, "--data", self.options.cache_dir)
            take = self.config.take  # type: ignore[attr-defined]
            report = LoadReport()
            records: list[EditRecord] = []  # uids are record indices: unique
            with closing(stream(path, self.options.lenient, report, source=data)) as edits:
                for record in edits:
                    records.append(record)
                    if take and len(records) >= take:
                        break
            if not records:
                raise RecordError(f"{data}: no usable records")
            self._cache[data] = records
            self.load_reports[data] = report
        return self._cache[data]
