import json

import pytest

from editbench.core.sources import RecordError
from editbench.tasks import TaskOptions
from editbench.tasks.jsonl import JsonlTask

GOOD = {"prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
        "target_new": "English", "target_true": "French",
        "paraphrases": ["Danielle Darrieux spoke"],
        "neighbours": [{"prompt": "The mother tongue of Léon Blum is", "answer": "French"}]}


def _write(tmp_path, *objs, raw=None):
    path = tmp_path / "edits.jsonl"
    lines = [json.dumps(o) for o in objs] + ([raw] if raw else [])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _records(path, **config):
    return JsonlTask(TaskOptions(data=str(path)), JsonlTask.Config(**config)).records()


def test_a_valid_file_loads_every_field(tmp_path):
    records = _records(_write(tmp_path, GOOD, {**GOOD, "uid": "second"}))
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
    ({**GOOD, "uid": ["a"]}, 2, "field 'uid': must be a string or an integer"),
])
def test_errors_name_file_line_and_field(tmp_path, bad, line, message):
    path = _write(tmp_path, GOOD, bad)
    with pytest.raises(RecordError, match=f"edits.jsonl:{line}: {message}"):
        _records(path)


def test_invalid_json_names_the_line(tmp_path):
    with pytest.raises(RecordError, match=r"edits.jsonl:2: not valid JSON"):
        _records(_write(tmp_path, GOOD, raw="{oops"))


def test_lines_are_counted_past_blank_lines_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "edits.jsonl"
    path.write_text(
        "\ufeff" + json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "target_new": ""}) + "\n",
        encoding="utf-8"
    )
    with pytest.raises(RecordError, match="edits.jsonl:3: field 'target_new'"):
        _records(path)


def test_text_that_is_not_utf8_names_the_file_and_line(tmp_path):
    path = tmp_path / "edits.jsonl"
    bad = json.dumps(
        {**GOOD, "subject": "Léon", "prompt": "Léon is"}, ensure_ascii=False
    ).encode("latin-1")
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + bad)
    with pytest.raises(RecordError, match=r"edits.jsonl:2: not UTF-8 text \(byte \d+ is 0xe9\)"):
        _records(path)


def test_a_repeated_uid_is_refused(tmp_path):
    with pytest.raises(RecordError, match="uid 'a' appears more than once"):
        _records(_write(tmp_path, {**GOOD, "uid": "a"}, {**GOOD, "uid": "a"}))


def test_it_is_a_file_task_lenient_loading_and_a_held_out_train_split(tmp_path):
    path = _write(
        tmp_path, *[{**GOOD, "uid": f"e{i}"} for i in range(40)], {**GOOD, "target_new": 3}
    )
    with pytest.raises(RecordError):
        _records(path)
    lenient = JsonlTask(
        TaskOptions(data=str(path), lenient=True), JsonlTask.Config(train_fraction=0.5)
    )
    train, scored = lenient.load("train"), lenient.load("eval")
    assert len(train) + len(scored) == 40 and train and scored
    assert not {r.uid for r in train} & {r.uid for r in scored}
    assert lenient.skipped_records() == 1


def test_task_needs_data_and_applies_limit(tmp_path):
    with pytest.raises(ValueError, match="--data"):
        JsonlTask(TaskOptions()).records()
    path = _write(tmp_path, GOOD, {**GOOD, "uid": "b"}, {**GOOD, "uid": "c"})
    assert len(JsonlTask(TaskOptions(data=str(path), limit=2)).records()) == 2
