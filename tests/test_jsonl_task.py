import json

import pytest

from editbench.tasks import TaskOptions
from editbench.tasks.jsonl import JsonlTask, RecordError, read_jsonl

GOOD = {"prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
        "target_new": "English", "target_true": "French", "paraphrases": ["Danielle Darrieux spoke"],
        "neighbours": [{"prompt": "The mother tongue of Léon Blum is", "answer": "French"}]}


def _write(tmp_path, *objs, raw=None):
    path = tmp_path / "edits.jsonl"
    lines = [json.dumps(o) for o in objs] + ([raw] if raw else [])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_valid_file_loads_every_field(tmp_path):
    records = read_jsonl(_write(tmp_path, GOOD, {**GOOD, "uid": "second"}))
    assert len(records) == 2
    first = records[0]
    assert first.target_new == "English" and first.target_true == "French"
    assert first.neighbours[0].answer == "French"
    assert first.uid == "edits.jsonl:1" and records[1].uid == "second"


@pytest.mark.parametrize("bad, line, message", [
    ({k: v for k, v in GOOD.items() if k != "target_new"}, 2, "field 'target_new': is required"),
    ({**GOOD, "paraphrases": "one"}, 2, "field 'paraphrases': must be a list"),
    ({**GOOD, "taget_new": "x"}, 2, "field 'taget_new': is not part of the schema"),
    ({**GOOD, "subject": "Nobody"}, 2, "field 'subject': 'Nobody' does not occur"),
    ({**GOOD, "neighbours": [{"prompt": "p"}]}, 2, r"field 'neighbours\[0\]'"),
])
def test_errors_name_file_line_and_field(tmp_path, bad, line, message):
    path = _write(tmp_path, GOOD, bad)
    with pytest.raises(RecordError, match=f"edits.jsonl:{line}: {message}"):
        read_jsonl(path)


def test_invalid_json_names_the_line(tmp_path):
    with pytest.raises(RecordError, match=r"edits.jsonl:2: not valid JSON"):
        read_jsonl(_write(tmp_path, GOOD, raw="{oops"))


def test_task_needs_data_and_applies_limit(tmp_path):
    with pytest.raises(ValueError, match="--data"):
        JsonlTask(TaskOptions())
    path = _write(tmp_path, GOOD, {**GOOD, "uid": "b"}, {**GOOD, "uid": "c"})
    assert len(JsonlTask(TaskOptions(data=str(path), limit=2)).records()) == 2
