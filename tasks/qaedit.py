"""QAEdit (Yang et al., "The Mirage of Model Editing: Revisiting Evaluation in the Wild",
ACL 2025): 19,249 real questions from Natural Questions, TriviaQA and SimpleQA, scored by the
answers a model generates.

Layout, as the release ships and reads it (WanliYoung/Revisit-Editing-Evaluation 61ccca3,
``data/QAEdit_inter_1k.json``, the same layout as ``data/QAEdit.json``; read by ``edit.py:80-86``):
``id`` (int), ``source`` (``NQ``, ``TQA`` or ``SQA``), ``prompt`` (the question, edited),
``target`` (its answer, the edit's target), ``subject``, ``rephrase``, and ``locality``: a list of
``{"loc", "loc_ans"}`` questions from NQ. The release scores the first locality question alone
(``edit.py:85-86``), so the first is the record's neighbour (``specificity_*``); the others form
the locality set ``more`` (``locality_more_*``), scored apart. ``source`` is kept in ``extra``.

The paper's protocol generates answers (greedy, up to 50 tokens, stop at '.', exact match of the
normalised text): the ``wild`` card (``--protocol wild``; ``editbench list --protocols``). A task
cannot choose a run's protocol, so a QAEdit run names it: ``editbench run --task qaedit
--protocol wild ...``; without it the run is scored under editbench's default, both families.
"""

from __future__ import annotations

from pathlib import Path

from ..core.records import EditRecord, Neighbour
from ..core.sources import Fields, Where
from ..core.task import TASKS
from .filetask import FileTask

#: the protocol card QAEdit's paper scores under (a run names it with --protocol)
PROTOCOL = "wild"


@TASKS.register("qaedit")
class QAEditTask(FileTask):
    name = "qaedit"
    description = ("QAEdit (NQ/TriviaQA/SimpleQA questions: prompt, target, subject, rephrase, "
                   "locality list); scored by generation: run it with --protocol wild")
    locality_descriptions = {"more": "QAEdit's further NQ locality questions (the release scores "
                                     "the first alone, the record's neighbour)"}
    default_data = ("https://raw.githubusercontent.com/WanliYoung/Revisit-Editing-Evaluation/"
                    "61ccca3c1ecdb3976c9c0924e9352f3e64cc7d48/data/QAEdit.json")

    def parse(self, obj, where: Where) -> EditRecord:
        fields = Fields(obj, where)
        raw = obj.get("locality")
        if not isinstance(raw, list) or not raw:
            raise where.error("locality", "must be a non-empty list of {loc, loc_ans} objects")
        pairs = []
        for i in range(len(raw)):
            item = Fields(raw[i], where, prefix=f"locality[{i}].")
            pairs.append(Neighbour(item.str("loc"), item.str("loc_ans")))
        uid = obj.get("id")
        if not isinstance(uid, (str, int)) or isinstance(uid, bool):
            uid = f"{Path(where.source).name}#{where.index}"
        return EditRecord(
            uid=f"qaedit-{uid}", prompt=fields.str("prompt"), subject=fields.str("subject"),
            target_new=fields.str("target"), paraphrases=(fields.str("rephrase"),),
            neighbours=tuple(pairs[:1]), locality={"more": tuple(pairs[1:])} if pairs[1:] else {},
            extra={"source": fields.str("source")} if fields.has("source") else {},
        )
