"""WikiBigEdit (Thede et al., ICML 2025): real Wikidata changes in time-ordered snapshots, each
fact asked as a question, with a rephrase, persona-styled questions, a locality question and a
multi-hop question.

Layout, as the release writes and reads it (ExplainableML/WikiBigEdit 66b4285):
``WikiBigEdit_Pipeline/combine_qa.py:77-88`` writes ``tag``, ``subject``, ``update`` (the edit
question), ``rephrase``, ``ans`` (the new answer), ``loc``/``loc_ans``, ``mhop``/``mhop_ans``
(null where no multi-hop question was found, :71-75) and one ``personas`` key per persona style
(``personas`` for the mixed one, ``personas_<style>`` otherwise, :52-62);
``EasyEdit_Experiments/run_lifelong_edit.py:126`` reads one file per snapshot,
``wiki_big_edit_<old>_<new>.json`` (dates ``YYYYMMDD``), and :273-297 uses the fields above.

How records are scored: ``update`` is edited towards ``ans``; ``rephrase`` is its paraphrase
(``generalization_acc``); ``loc`` is its neighbour (``specificity_*``); the persona and multi-hop
questions are portability questions (``portability_acc`` over both) and each kind is also scored
apart: ``persona_acc`` (answer ``ans``, as UltraEdit's loader scores them, XiaojieGu/UltraEdit
0beb222 ``data/wikibigedit.py:14,24``; the WikiBigEdit release reads an ``alt`` field there,
``run_lifelong_edit.py:297``, which its writer does not produce) and ``mhop_acc`` (answer
``mhop_ans``). ``tag`` is kept in ``extra``.

The stream: ``--data`` is one snapshot file or a folder of them; a folder's files are ordered by
the dates in their names, and the records of all snapshots form one time-ordered stream
(``extra["snapshot"]`` names each record's). The runner shuffles a task's records unless they share
a ``group``, so by default every record is in one group and a run edits the first ``--edits`` of
the stream in time order; ``--param wikibigedit.order=shuffled`` drops the group (and allows
``train_fraction``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..core.records import EditRecord, Metric, Neighbour, Portability, ScoreRow
from ..core.sources import (
    Fields,
    RecordError,
    Where,
    parse_all,
    read_records,
)
from ..core.task import TASKS
from ._kinds import kind_rows
from .filetask import FileTask, FileTaskConfig

ORDERS = ("time", "shuffled")
STREAM_GROUP = "wikibigedit-stream"
KIND_METRICS = {
    "personas": Metric("persona_acc", "teacher-forced top-1 token accuracy of the new answer at "
                       "WikiBigEdit's persona-styled questions"),
    "mhop": Metric("mhop_acc", "teacher-forced top-1 token accuracy at WikiBigEdit's multi-hop "
                   "questions, against their answer"),
}
_SNAPSHOT = re.compile(r"(\d{8})_(\d{8})")


@dataclass(frozen=True)
class WikiBigEditConfig(FileTaskConfig):
    #: time: the snapshots' records edited in file order (one group); shuffled: the runner's order
    order: str = "time"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.order == "time" and self.train_fraction:
            raise ValueError("train_fraction needs order=shuffled: the time-ordered stream is one "
                             "group; pass train_data=FILE instead")


def snapshot_files(folder: Path) -> list[Path]:
    """A folder's snapshot files, oldest first (by the ``YYYYMMDD_YYYYMMDD`` in each name)."""
    files = [p for p in folder.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file()]
    dated = [(m.groups(), p) for p in files if (m := _SNAPSHOT.search(p.name))]
    undated = sorted(p.name for p in files if not _SNAPSHOT.search(p.name))
    if undated:
        raise RecordError(f"--data {folder}: {undated[0]} has no snapshot dates "
                          "(YYYYMMDD_YYYYMMDD) in its name, so its place in time is unknown")
    if not dated:
        raise RecordError(f"--data {folder}: no snapshot files (wiki_big_edit_<old>_<new>.json)")
    return [p for _, p in sorted(dated)]


@TASKS.register("wikibigedit")
class WikiBigEditTask(FileTask):
    name = "wikibigedit"
    description = ("WikiBigEdit snapshots (update, rephrase, ans, loc, mhop, personas) as one "
                   "time-ordered stream; persona_acc and mhop_acc apart; needs --data FILE_OR_DIR")
    Config = WikiBigEditConfig
    metrics = tuple(KIND_METRICS.values())

    def parse(self, obj, where: Where) -> EditRecord:
        fields = Fields(obj, where)
        answer = fields.str("ans")
        questions = [Portability(fields.str(key), answer, None, "personas")
                     for key in sorted(obj) if key.startswith("personas") and obj.get(key)]
        if fields.has("mhop") or fields.has("mhop_ans"):
            questions.append(Portability(fields.str("mhop"), fields.str("mhop_ans"), None, "mhop"))
        snapshot = _SNAPSHOT.search(Path(where.source).name)
        extra = {"snapshot": "_".join(snapshot.groups()) if snapshot else ""}
        if obj.get("tag"):
            extra["tag"] = obj["tag"]
        order = self.config.order  # type: ignore[attr-defined]
        return EditRecord(
            uid=f"{Path(where.source).name}#{where.index}", prompt=fields.str("update"),
            subject=fields.str("subject"), target_new=answer,
            paraphrases=(fields.str("rephrase"),),
            neighbours=(Neighbour(fields.str("loc"), fields.str("loc_ans")),),
            portability=tuple(questions), extra=extra,
            group=STREAM_GROUP if order == "time" else None)

    def read(self, data: str) -> list[EditRecord]:
        folder = Path(data).expanduser()
        if data in self._cache or not folder.is_dir():
            return super().read(data)
        records: list[EditRecord] = []
        for path in snapshot_files(folder):
            parsed, report = parse_all(read_records(path), self.parse, self.options.lenient)
            records += parsed
            self.load_reports[str(path)] = report
        self._cache[data] = records
        return records

    def extra_metrics(self, probe, records: list[EditRecord],
                      positions: list[int]) -> list[ScoreRow]:
        return kind_rows(probe, records, positions, KIND_METRICS)

