"""KnowEdit's nested layout: locality sets and portability questions are read, not dropped."""

import json

from editbench.core.task import TaskOptions
from editbench.tasks.counterfact import CounterFactTask
from editbench.tasks.knowedit import KnowEditTask

# the layout of KnowEdit's wiki_counterfact test file (zjunlp/KnowEdit), one record written here
RECORD = {
    "subject": "Kuala Langat",
    "prompt": "The name of the country which Kuala Langat is associated with is",
    "target_new": "Yugoslavia", "ground_truth": "Malaysia",
    "rephrase": "Kuala Langat is associated with the country of",
    "portability": {
        "Subject_Aliasing": [{"prompt": "The country of Kuala Langat District is",
                              "ground_truth": ["Yugoslavia"]}],
        "Logical_Generalization": [{"prompt": "The continent Kuala Langat is in is",
                                    "ground_truth": [["Europe", "European continent"]]}],
    },
    "locality": {
        "Relation_Specificity": [{"prompt": "The country of Kuala Lumpur is",
                                  "ground_truth": ["Malaysia"]}],
        "Forgetfulness": [{"prompt": "Kuala Langat's country, which is not",
                           "ground_truth": "Malaysia"}],
    },
}


def test_nested_locality_and_portability_are_scored_sets(tmp_path):
    path = tmp_path / "wiki_counterfact.json"
    path.write_text(json.dumps([RECORD]))
    for task in (
        KnowEditTask(TaskOptions(data=str(path))), CounterFactTask(TaskOptions(data=str(path)))
    ):
        (record,) = task.records()
        assert record.paraphrases == ("Kuala Langat is associated with the country of",)
        assert set(record.locality) == {"Relation_Specificity", "Forgetfulness"}
        assert record.locality["Forgetfulness"][0].answer == "Malaysia"
        kinds = {q.kind: q.answer for q in record.portability}
        assert kinds == {"Subject_Aliasing": "Yugoslavia", "Logical_Generalization": "Europe"}
