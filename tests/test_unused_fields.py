"""A field a loader does not use is named in a warning, never dropped silently."""

import json

import pytest

from editbench.core.task import TaskOptions
from editbench.tasks.counterfact import CounterFactTask
from editbench.tasks.zsre import ZsreTask

ZSRE = {"subject": "Watts Humphrey", "src": "What university did Watts Humphrey attend?",
        "pred": "Trinity College",
        "rephrase": "What university did Watts Humphrey take part in?",
        "alt": "University of Michigan", "answers": ["Illinois Institute of Technology"],
        "loc": "nq question: who played desmond doss father", "loc_ans": "Hugo Weaving",
        "cond": "Trinity College >> University of Michigan || What university?"}


def _load(task_cls, records, tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records))
    return task_cls(TaskOptions(data=str(path))).records()


def test_an_unused_field_is_named_in_a_warning(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        records = _load(
            ZsreTask,
            [ZSRE, {**ZSRE, "src": "Which school did Watts Humphrey attend?", "novel": 1}],
            tmp_path,
        )
    assert len(records) == 2
    assert "cond (2 records)" in caplog.text and "novel (1 records)" in caplog.text
    assert "src" not in caplog.text.split("left out of the edits:")[1]


def test_nested_fields_are_reported_by_path(tmp_path, caplog):
    record = {"case_id": 0, "pararel_idx": 2796,
              "requested_rewrite": {"prompt": "The mother tongue of {} is", "relation_id": "P103",
                                    "target_new": {"str": "English", "id": "Q1860"},
                                    "target_true": {"str": "French", "id": "Q150"},
                                    "subject": "Danielle Darrieux",
                                    "extra_key": "x"},
              "paraphrase_prompts": ["Danielle Darrieux's mother tongue is"],
              "neighborhood_prompts": ["Michel Rocard's mother tongue is"], "attribute_prompts": [],
              "generation_prompts": []}
    with caplog.at_level("WARNING"):
        _load(CounterFactTask, [record], tmp_path)
    assert "pararel_idx (1 records)" in caplog.text and "requested_rewrite.extra_key" in caplog.text
    assert "target_new.id" not in caplog.text


@pytest.mark.parametrize("name", ["zsre.json", "counterfact.json", "counterfact_knowedit.json"])
def test_published_samples_warn_about_what_they_drop(name, shared_data, caplog):
    path = shared_data / name
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    task_cls = ZsreTask if name == "zsre.json" else CounterFactTask
    with caplog.at_level("WARNING"):
        task_cls(TaskOptions(data=str(path))).records()
    expected = {
        "zsre.json": "cond", "counterfact.json": "pararel_idx", "counterfact_knowedit.json": None
    }[name]
    if expected:
        assert f"{expected} (" in caplog.text
