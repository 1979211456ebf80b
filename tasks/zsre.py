"""ZsRE question answering in the MEND/ROME format (Levy et al. 2017; De Cao et al. 2021; Mitchell et al. 2022).

Record fields: ``subject``, ``src`` (the question, edited), ``rephrase`` (a paraphrase),
``alt`` (the new answer; MALMEN's copies may call it ``ans``), ``answers`` (the true answers),
``loc``/``loc_ans`` (an unrelated Natural Questions question, "nq question: ...", with its answer).
As in MEND, MALMEN, RLEdit and MEMIT's ZsRE code, the locality prompt is ``loc + "?"``.
The published metric is teacher-forced token top-1 accuracy (``efficacy_acc`` and friends).
"""

from __future__ import annotations

from pathlib import Path

from ..core.records import EditRecord, Neighbour
from ..core.sources import Fields, Where
from ..core.task import TASKS
from .filetask import FileTask


@TASKS.register("zsre")
class ZsreTask(FileTask):
    name = "zsre"
    description = "ZsRE question answering, MEND/ROME format (src, rephrase, alt, answers, loc, loc_ans)"
    default_data = "https://rome.baulab.info/data/dsets/zsre_mem_eval.json"

    def parse(self, obj, where: Where) -> EditRecord:
        fields = Fields(obj, where)
        answers = fields.str_list("answers", allow_str=True) if fields.has("answers") else []
        return EditRecord(
            uid=f"{Path(where.source).name}#{where.index}",
            prompt=fields.str("src"),
            subject=fields.str("subject"),
            target_new=fields.str("alt", "ans"),
            target_true=answers[0] if answers else None,
            paraphrases=(fields.str("rephrase"),),
            neighbours=(Neighbour(fields.str("loc") + "?", fields.str("loc_ans")),),
            extra={"pred": obj.get("pred")} if obj.get("pred") is not None else {},
        )
