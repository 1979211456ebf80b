"""User tasks: a JSONL file of edits in editbench's own schema, validated line by line.

One JSON object per line::

    {"prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
     "target_new": "English", "target_true": "French",
     "paraphrases": ["Danielle Darrieux's native language is"],
     "neighbours": [{"prompt": "The mother tongue of Léon Blum is", "answer": "French"}],
     "uid": "cf-0", "extra": {}}

``prompt``, ``subject`` and ``target_new`` are required and ``subject`` must occur in ``prompt``;
the rest is optional. Unknown keys are an error, so a typo never silently drops data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..harness.records import EditRecord, Neighbour
from .base import TASKS, Task, TaskOptions
from .sources import Fields, RecordError, Where

FIELDS = {"prompt", "subject", "target_new", "target_true", "paraphrases", "neighbours", "uid", "extra"}

__all__ = ["JsonlTask", "RecordError", "parse_record", "read_jsonl"]


def parse_record(obj: Any, where: Where) -> EditRecord:
    fields = Fields(obj, where)
    unknown = set(obj) - FIELDS
    if unknown:
        raise where.error(sorted(unknown)[0], f"is not part of the schema (allowed: {', '.join(sorted(FIELDS))})")
    prompt, subject = fields.str("prompt"), fields.str("subject")
    if subject not in prompt:
        raise where.error("subject", f"{subject!r} does not occur in the prompt {prompt!r}")
    raw_neighbours = obj.get("neighbours", [])
    if not isinstance(raw_neighbours, list):
        raise where.error("neighbours", "must be a list of {\"prompt\", \"answer\"} objects")
    neighbours = []
    for i, item in enumerate(raw_neighbours):
        if not isinstance(item, dict) or set(item) != {"prompt", "answer"}:
            raise where.error(f"neighbours[{i}]", "must be an object with exactly 'prompt' and 'answer'")
        item_fields = Fields(item, where, prefix=f"neighbours[{i}].")
        neighbours.append(Neighbour(item_fields.str("prompt"), item_fields.str("answer")))
    extra = obj.get("extra", {})
    if not isinstance(extra, dict):
        raise where.error("extra", "must be an object")
    return EditRecord(
        uid=str(obj.get("uid", f"{Path(where.source).name}:{where.index}")),
        prompt=prompt,
        subject=subject,
        target_new=fields.str("target_new"),
        target_true=fields.optional_str("target_true"),
        paraphrases=tuple(fields.str_list("paraphrases")) if fields.has("paraphrases") else (),
        neighbours=tuple(neighbours),
        extra=extra,
    )


def read_jsonl(path: Path) -> list[EditRecord]:
    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordError(f"{path}:{line_no}: not valid JSON: {exc.msg} (column {exc.colno})") from None
            records.append(parse_record(obj, Where(str(path), line_no, by_line=True)))
    if not records:
        raise RecordError(f"{path}: the file holds no records")
    uids = [r.uid for r in records]
    if len(set(uids)) != len(uids):
        dup = next(u for u in uids if uids.count(u) > 1)
        raise RecordError(f"{path}: uid {dup!r} appears more than once")
    return records


@TASKS.register("jsonl")
class JsonlTask(Task):
    name = "jsonl"
    description = "your own edits: a JSONL file in editbench's schema (--data FILE, or --task FILE.jsonl)"

    def __init__(self, options: TaskOptions, config=None) -> None:
        super().__init__(options, config)
        if not options.data:
            raise ValueError("the jsonl task needs --data PATH (or pass the file as --task PATH.jsonl)")

    def load(self, split: str) -> list[EditRecord]:
        records = read_jsonl(Path(self.options.data))
        if split == "eval":
            return records
        if split == "train":
            raise ValueError("a JSONL task has one split ('eval'); give a separate file to train on")
        raise ValueError(f"--split {split!r}: a JSONL task has only the 'eval' split")
