"""MQuAKE's published layout: a case's rewrites become one group of edits, its multi-hop questions
portability on the group's last record, the unedited hops of both chains a locality set."""

from __future__ import annotations

import json

import pytest

from editbench.core.records import EditRecord
from editbench.core.task import TaskOptions
from editbench.harness.plan.resolve import stream_order
from editbench.tasks.mquake import MquakeTask


def _hop(question, cloze, answer, aliases=()):
    return {"question": question, "cloze": cloze, "answer": answer, "answer_alias": list(aliases)}


#: the layout of princeton-nlp/MQuAKE datasets/*.json (README "Data format"); facts invented
TWO_EDITS = {
    "case_id": 7,
    "requested_rewrite": [
        {"prompt": "{} is associated with the sport of", "relation_id": "P641",
         "target_new": {"str": "cricket", "id": "Q5375"},
         "target_true": {"str": "association football", "id": "Q2736"},
         "subject": "Dudley Town F.C.",
         "question": "Which sport is Dudley Town F.C. associated with?"},
        {"prompt": "{} was created in the country of", "relation_id": "P495",
         "target_new": {"str": "Italy", "id": "Q38"},
         "target_true": {"str": "England", "id": "Q21"},
         "subject": "cricket", "question": "Which country was cricket created in?"},
    ],
    "questions": ["What is the capital of the country where Dudley Town F.C.'s sport originated?",
                  "Which city is the capital of the country where the sport of Dudley Town F.C. "
                  "was created?",
                  "Where is the capital of the birthplace of the sport Dudley Town F.C. plays?"],
    "answer": "London", "answer_alias": ["London UK"],
    "new_answer": "Rome", "new_answer_alias": ["Roma", "the Eternal City"],
    "single_hops": [
        _hop("Which sport is Dudley Town F.C. associated with?",
             "Dudley Town F.C. is associated with the sport of",
             "association football", ["football"]),
        _hop("Which country was association football created in?",
             "association football was created in the country of", "England"),
        _hop("What is the capital of England?", "The capital of England is", "London"),
    ],
    "new_single_hops": [
        _hop("Which sport is Dudley Town F.C. associated with?",
             "Dudley Town F.C. is associated with the sport of", "cricket"),
        _hop("Which country was cricket created in?", "cricket was created in the country of",
             "Italy"),
        _hop("What is the capital of Italy?", "The capital of Italy is", "Rome"),
    ],
    "orig": {"triples": [["Q5311995", "P641", "Q2736"]],
             "triples_labeled": [["Dudley Town F.C.", "sport", "football"]],
             "new_triples": [], "new_triples_labeled": [],
             "edit_triples": [["Q5311995", "P641", "Q5375"]]},
}

ONE_EDIT = {
    "case_id": 8,
    "requested_rewrite": [
        {"prompt": "{} is a citizen of", "relation_id": "P27",
         "target_new": {"str": "Croatia", "id": "Q224"},
         "target_true": {"str": "United States of America", "id": "Q30"}, "subject": "Ellie Kemper",
         "question": "What is the country of citizenship of Ellie Kemper?"},
    ],
    "questions": ["Who is the head of state of the country Ellie Kemper is a citizen of?"],
    "answer": "Joe Biden", "answer_alias": [], "new_answer": "Zoran Milanović",
    "new_answer_alias": [],
    "single_hops": [_hop("What is the country of citizenship of Ellie Kemper?",
                         "Ellie Kemper is a citizen of", "United States of America"),
                    _hop("Who is the head of state of the United States of America?",
                         "The head of state of the United States of America is", "Joe Biden")],
    "new_single_hops": [_hop("What is the country of citizenship of Ellie Kemper?",
                             "Ellie Kemper is a citizen of", "Croatia"),
                        _hop("Who is the head of state of Croatia?",
                             "The head of state of Croatia is", "Zoran Milanović")],
    "orig": {"triples": [], "triples_labeled": [], "new_triples": [], "new_triples_labeled": [],
             "edit_triples": []},
}


def _task(tmp_path, cases, **config):
    path = tmp_path / "mquake.json"
    path.write_text(json.dumps(cases))
    return MquakeTask(TaskOptions(data=str(path)), MquakeTask.Config(**config))


def test_a_case_becomes_a_group_of_edits_with_its_questions_on_the_last(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        records = _task(tmp_path, [TWO_EDITS, ONE_EDIT]).records()
    assert [r.uid for r in records] == ["mquake-7-0", "mquake-7-1", "mquake-8-0"]
    assert [r.group for r in records] == ["mquake-7", "mquake-7", "mquake-8"]
    first, second, alone = records
    assert (
        first.prompt == "Dudley Town F.C. is associated with the sport of"
        and first.target_new == "cricket"
    )
    assert first.target_true == "association football"
    assert first.paraphrases == ("Q: Which sport is Dudley Town F.C. associated with? A:",)
    # all of the case's questions wait for its last edit
    assert not first.portability and not first.locality
    assert [q.kind for q in second.portability] == ["multi_hop"] * 3
    question = second.portability[0]
    assert question.prompt == (
        "Q: What is the capital of the country where Dudley Town F.C.'s sport originated? A:"
    )
    assert (question.answer, question.before, question.aliases) == (
        "Rome", "London", ("Roma", "the Eternal City")
    )
    # the chain locality: hops no edit changes (the edited clozes are the edits themselves)
    chain = {n.prompt: n.answer for n in second.locality["chain"]}
    assert chain == {"association football was created in the country of": "England",
                     "The capital of England is": "London", "The capital of Italy is": "Rome"}
    assert {n.prompt for n in alone.locality["chain"]} == {
        "The head of state of the United States of America is", "The head of state of Croatia is"
    }
    # what the loader leaves out is named, never dropped silently
    warned = caplog.text.split("left out of the edits:")[1]
    assert "answer_alias (2 records)" in warned and "orig (2 records)" in warned
    assert (
        "single_hops[].answer_alias" in warned
        and "questions" not in warned.replace("new_single_hops", "")
    )


def test_fewshot_demonstrations_come_before_every_question(tmp_path):
    demos = tmp_path / "demos.txt"
    demos.write_text("Q: What is the capital of France? A: Paris\n")
    records = _task(tmp_path, [ONE_EDIT], fewshot=str(demos)).records()
    assert records[0].portability[0].prompt == (
        "Q: What is the capital of France? A: Paris\n"
        "Q: Who is the head of state of the country Ellie Kemper is a "
        "citizen of? A:"
    )
    with pytest.raises(FileNotFoundError, match="mquake.fewshot"):
        _task(tmp_path, [ONE_EDIT], fewshot=str(tmp_path / "missing.txt")).records()


def test_a_bad_case_names_its_field(tmp_path):
    broken = {
        **ONE_EDIT,
        "requested_rewrite": [{**ONE_EDIT["requested_rewrite"][0], "prompt": "no placeholder"}],
    }
    with pytest.raises(Exception, match=r"requested_rewrite\[0\]\.prompt"):
        _task(tmp_path, [broken]).records()
    with pytest.raises(Exception, match="requested_rewrite"):
        _task(tmp_path, [{**ONE_EDIT, "requested_rewrite": []}]).records()


def test_conflicting_edits_across_cases_are_counted_in_a_warning(tmp_path, caplog):
    rival = json.loads(json.dumps(ONE_EDIT))
    rival["case_id"] = 9
    rival["requested_rewrite"][0]["target_new"]["str"] = "Peru"
    with caplog.at_level("WARNING"):
        _task(tmp_path, [ONE_EDIT, rival]).records()
    assert "1 edited prompts get different new objects" in caplog.text


def test_the_stream_keeps_a_group_together_in_file_order():
    records = [EditRecord(uid=f"{g}-{i}", prompt=f"{g} {i}", subject=g, target_new="x", group=g)
               for g, n in (("a", 3), ("b", 1), ("c", 2), ("d", 4)) for i in range(n)]
    for seed in range(5):
        order = [records[i].uid for i in stream_order(records, seed)]
        assert sorted(order) == sorted(r.uid for r in records)
        for group, n in (("a", 3), ("c", 2), ("d", 4)):
            start = order.index(f"{group}-0")
            assert order[start:start + n] == [f"{group}-{i}" for i in range(n)]
    plain = [EditRecord(uid=str(i), prompt=str(i), subject="s", target_new="x") for i in range(20)]
    import random
    expected = list(range(20))
    random.Random(3).shuffle(expected)
    assert stream_order(plain, 3) == expected  # without groups: the order every earlier run used


def test_a_run_scores_multi_hop_questions_after_the_whole_case(tmp_path, micro_llama):
    from editbench.core.store import load_results
    from editbench.harness.plan.resolve import resolve
    from editbench.harness.plan.settings import RunSpec
    from editbench.harness.running.runner import Runner

    path = tmp_path / "mquake.json"
    path.write_text(json.dumps([TWO_EDITS, ONE_EDIT]))
    spec = RunSpec(
        methods=("ft-m",), task="mquake", data=str(path), model=str(micro_llama), edits=3,
        batch_size=1, checkpoints="1,3", out=tmp_path / "out", params={"ft-m": {"steps": "2"}}
    )
    Runner(resolve(spec)).run()
    store = load_results(spec.out)
    scores = store.scores()
    assert {"portability_acc", "multihop_acc", "locality_chain_agree"} <= set(scores["metric"])
    # the case's questions are on its last edit: scored only once both of its edits were made
    multihop = scores[scores["metric"] == "multihop_acc"]
    assert set(multihop["uid"]) <= {"mquake-7-1", "mquake-8-0"} and len(multihop)
    baseline = store.runs().iloc[-1]["baseline"]
    # the unedited model on the questions, against `answer`
    assert "pre_edit_portability_accuracy" in baseline
