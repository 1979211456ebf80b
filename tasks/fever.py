"""FEVER fact-checking edits (Thorne et al. 2018; the editing version of De Cao et al. 2021).

Accepted layouts, recognised per record by their keys:

- MALMEN / RLEdit ``fever_{train,eval}.json``: ``prompt``, ``alt``, ``equiv_prompt`` (list),
  ``unrel_prompt``, ``unrel_ans``.
- MEND's JSONL: ``input`` (the claim), ``alternatives`` (list; the first is the edit target),
  ``filtered_rephrases`` (list), optional ``prediction``; it carries no locality question (MEND
  draws those from Natural Questions separately), so such records have no neighbours.
- ZsRE-style spellings also work: ``src``, ``rephrase``, ``loc``/``loc_ans``.

A claim has no marked subject; the whole claim stands in for it (locate-then-edit methods then
read the claim's last token).
"""

from __future__ import annotations

from pathlib import Path

from ..core.records import EditRecord, Neighbour
from ..core.sources import Fields, Where
from ..core.task import TASKS
from .filetask import FileTask


@TASKS.register("fever")
class FeverTask(FileTask):
    name = "fever"
    description = "FEVER fact-checking edits (MALMEN/RLEdit json or MEND jsonl keys); needs --data"

    def parse(self, obj, where: Where) -> EditRecord:
        fields = Fields(obj, where)
        prompt = fields.str("prompt", "input", "src")
        if fields.has("alternatives"):
            target_new = fields.first_str("alternatives")
        else:
            target_new = fields.str("alt", "target_new")
        paraphrase_key = next((k for k in ("equiv_prompt", "filtered_rephrases", "rephrase")
                               if fields.has(k)), None)
        paraphrases = (tuple(fields.str_list(paraphrase_key, allow_str=True)) if paraphrase_key
                       else ())
        neighbours = ()
        if fields.has("unrel_prompt") or fields.has("loc"):
            neighbours = (Neighbour(fields.str("unrel_prompt", "loc"),
                                    fields.str("unrel_ans", "loc_ans")),)
        return EditRecord(
            uid=f"{Path(where.source).name}#{where.index}",
            prompt=prompt,
            subject=prompt,
            target_new=target_new,
            target_true=fields.optional_str("prediction"),
            paraphrases=paraphrases,
            neighbours=neighbours,
        )
