"""ZsRE question answering in the MEND/ROME format (Levy et al. 2017; De Cao et al. 2021;
Mitchell et al. 2022).

Record fields: ``subject``, ``src`` (the question, edited), ``rephrase`` (a paraphrase),
``alt`` (the new answer; MALMEN's copies may call it ``ans``), ``answers`` (the true answers),
``loc``/``loc_ans`` (an unrelated Natural Questions question, "nq question: ...", with its answer).
As in MEND, MALMEN, RLEdit and MEMIT's ZsRE code, the locality prompt is ``loc + "?"``.
The published metric is teacher-forced token top-1 accuracy (``efficacy_acc`` and friends).

Which answer an edit asks for differs between the papers' tables: MEND, MALMEN, RLEdit and
EasyEdit edit towards ``alt`` (EasyEdit ``easyeditor/dataset/zsre.py:79``; MALMEN and RLEdit read
it as ``ans``), ROME, MEMIT and AlphaEdit towards ``answers[0]`` (``dsets/zsre.py:42`` in all
three, with no true answer). ``--param zsre.target=answers`` reproduces the latter; the setting is
stored with the run. The default file is the one ROME, MEMIT and AlphaEdit download
(``dsets/zsre.py:9``): ``zsre_mend_eval.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.records import EditRecord, Neighbour
from ..core.sources import Fields, Where
from ..core.task import TASKS
from .filetask import FileTask, FileTaskConfig

TARGETS = ("alt", "answers")


@dataclass(frozen=True)
class ZsreConfig(FileTaskConfig):
    # alt: MEND, MALMEN, RLEdit, EasyEdit; answers: answers[0], as ROME, MEMIT, AlphaEdit
    target: str = "alt"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")


@TASKS.register("zsre")
class ZsreTask(FileTask):
    name = "zsre"
    description = ("ZsRE question answering, MEND/ROME format (src, rephrase, alt, answers, loc, "
                   "loc_ans)")
    Config = ZsreConfig
    default_data = "https://rome.baulab.info/data/dsets/zsre_mend_eval.json"

    def parse(self, obj, where: Where) -> EditRecord:
        fields = Fields(obj, where)
        if self.config.target == "answers":
            # ROME/MEMIT: the true answer is the edit, and there is no other
            target_new, target_true = fields.first_str("answers", allow_str=True), None
        else:
            answers = fields.str_list("answers", allow_str=True) if fields.has("answers") else []
            target_new, target_true = fields.str("alt", "ans"), (answers[0] if answers else None)
        return EditRecord(
            uid=f"{Path(where.source).name}#{where.index}",
            prompt=fields.str("src"),
            subject=fields.str("subject"),
            target_new=target_new,
            target_true=target_true,
            paraphrases=(fields.str("rephrase"),),
            neighbours=(Neighbour(fields.str("loc") + "?", fields.str("loc_ans")),),
            extra={"pred": obj.get("pred")} if obj.get("pred") is not None else {},
        )
