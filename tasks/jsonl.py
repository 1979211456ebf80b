"""User tasks: a JSONL file of edits in editbench's own schema, validated line by line.

One JSON object per line::

    {"prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
     "target_new": "English", "target_true": "French",
     "paraphrases": ["Danielle Darrieux's native language is"],
     "neighbours": [{"prompt": "The mother tongue of Léon Blum is", "answer": "French"}],
     "uid": "cf-0", "extra": {}}

``prompt``, ``subject`` and ``target_new`` are required and ``subject`` must occur in ``prompt``;
the rest is optional. Unknown keys are an error, so a typo never silently drops data. It is a
file task like the published ones: ``--lenient``, ``--limit`` and a train split
(``--param jsonl.train_data=FILE`` or ``--param jsonl.train_fraction=0.5``) work the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.records import EditRecord, Neighbour
from ..core.sources import Fields, Where
from ..core.task import TASKS
from .filetask import FileTask

FIELDS = {"prompt", "subject", "target_new", "target_true", "paraphrases", "neighbours", "uid",
          "extra"}


def parse_record(obj: Any, where: Where) -> EditRecord:
    fields = Fields(obj, where)
    unknown = set(obj) - FIELDS
    if unknown:
        raise where.error(sorted(unknown)[0],
                          f"is not part of the schema (allowed: {', '.join(sorted(FIELDS))})")
    prompt, subject = fields.str("prompt"), fields.str("subject")
    if subject not in prompt:
        raise where.error("subject", f"{subject!r} does not occur in the prompt {prompt!r}")
    raw_neighbours = obj.get("neighbours", [])
    if not isinstance(raw_neighbours, list):
        raise where.error("neighbours", "must be a list of {\"prompt\", \"answer\"} objects")
    neighbours = []
    for i, item in enumerate(raw_neighbours):
        if not isinstance(item, dict) or set(item) != {"prompt", "answer"}:
            raise where.error(f"neighbours[{i}]",
                              "must be an object with exactly 'prompt' and 'answer'")
        item_fields = Fields(item, where, prefix=f"neighbours[{i}].")
        neighbours.append(Neighbour(item_fields.str("prompt"), item_fields.str("answer")))
    extra = obj.get("extra", {})
    if not isinstance(extra, dict):
        raise where.error("extra", "must be an object")
    uid = obj.get("uid", f"{Path(where.source).name}:{where.index}")
    if not isinstance(uid, (str, int)) or isinstance(uid, bool):
        raise where.error("uid", f"must be a string or an integer, got {uid!r}")
    return EditRecord(
        uid=str(uid),
        prompt=prompt,
        subject=subject,
        target_new=fields.str("target_new"),
        target_true=fields.optional_str("target_true"),
        paraphrases=tuple(fields.str_list("paraphrases")) if fields.has("paraphrases") else (),
        neighbours=tuple(neighbours),
        extra=extra,
    )


@TASKS.register("jsonl")
class JsonlTask(FileTask):
    name = "jsonl"
    description = ("your own edits: a JSONL file in editbench's schema (--data FILE, or "
                   "--task FILE.jsonl)")

    def parse(self, obj: Any, where: Where) -> EditRecord:
        return parse_record(obj, where)
