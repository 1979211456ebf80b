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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..harness.records import EditRecord, Neighbour
from .base import TASKS, Task, TaskOptions

FIELDS = {"prompt", "subject", "target_new", "target_true", "paraphrases", "neighbours", "uid", "extra"}


class RecordError(ValueError):
    """A record that does not fit its schema; the message names file, record and field."""


@dataclass(frozen=True)
class Where:
    path: Path
    line: int

    def error(self, field: str, problem: str) -> RecordError:
        return RecordError(f"{self.path}:{self.line}: field {field!r}: {problem}")


def _string(obj: dict[str, Any], field: str, where: Where, required: bool) -> str | None:
    if field not in obj or obj[field] is None:
        if required:
            raise where.error(field, "is required")
        return None
    value = obj[field]
    if not isinstance(value, str) or not value.strip():
        raise where.error(field, f"must be a non-empty string, got {value!r}")
    return value


def _strings(obj: dict[str, Any], field: str, where: Where) -> tuple[str, ...]:
    value = obj.get(field, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise where.error(field, "must be a list of non-empty strings")
    return tuple(value)


def parse_record(obj: Any, where: Where) -> EditRecord:
    if not isinstance(obj, dict):
        raise RecordError(f"{where.path}:{where.line}: expected a JSON object, got {type(obj).__name__}")
    unknown = set(obj) - FIELDS
    if unknown:
        raise where.error(sorted(unknown)[0], f"is not part of the schema (allowed: {', '.join(sorted(FIELDS))})")
    prompt = _string(obj, "prompt", where, True)
    subject = _string(obj, "subject", where, True)
    if subject not in prompt:
        raise where.error("subject", f"{subject!r} does not occur in the prompt {prompt!r}")
    neighbours = []
    raw_neighbours = obj.get("neighbours", [])
    if not isinstance(raw_neighbours, list):
        raise where.error("neighbours", "must be a list of {\"prompt\", \"answer\"} objects")
    for i, item in enumerate(raw_neighbours):
        if not isinstance(item, dict) or set(item) != {"prompt", "answer"}:
            raise where.error(f"neighbours[{i}]", "must be an object with exactly 'prompt' and 'answer'")
        neighbours.append(Neighbour(_string(item, "prompt", where, True), _string(item, "answer", where, True)))
    extra = obj.get("extra", {})
    if not isinstance(extra, dict):
        raise where.error("extra", "must be an object")
    return EditRecord(
        uid=str(obj.get("uid", f"{where.path.name}:{where.line}")),
        prompt=prompt,
        subject=subject,
        target_new=_string(obj, "target_new", where, True),
        target_true=_string(obj, "target_true", where, False),
        paraphrases=_strings(obj, "paraphrases", where),
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
            records.append(parse_record(obj, Where(path, line_no)))
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
