"""The loaders of issue 33 read their published layouts (records written here in each layout, facts
invented), name the fields they leave out, and refuse bad input in one line naming the file, the
record and the field."""

from __future__ import annotations

import json

import pytest

from editbench.core.records import PairScore
from editbench.core.sources import RecordError
from editbench.core.task import TaskOptions
from editbench.tasks import TASKS
from editbench.tasks.mquake import RELEASES, MquakeTask
from editbench.tasks.qaedit import QAEditTask
from editbench.tasks.ultraeditbench import UltraEditBenchTask
from editbench.tasks.uniedit import UniEditTask
from editbench.tasks.wikibigedit import STREAM_GROUP, WikiBigEditTask

#: ExplainableML/WikiBigEdit combine_qa.py:77-88 (one persona style, the mixed one)
WIKIBIGEDIT = {"tag": "new", "subject": "Ana Lind", "update": "Which club does Ana Lind play for?",
               "rephrase": "Ana Lind is a player of which club?", "ans": "Rovers",
               "loc": "Who wrote Dune?", "loc_ans": "Frank Herbert",
               "mhop": "In which city is the club Ana Lind plays for based?",
               "mhop_ans": "Bristol",
               "personas": "Hey, quick one: what team is Ana Lind with these days?"}
#: WanliYoung/Revisit-Editing-Evaluation data/QAEdit_inter_1k.json
QAEDIT = {"id": 1104, "source": "NQ", "prompt": "who has the most 70 point games in nba history?",
          "target": "Wilt Chamberlain", "subject": "most 70 point games in nba history",
          "rephrase": "Which NBA player has scored 70 points most often?",
          "locality": [{"loc": "who wrote dune", "loc_ans": "Frank Herbert"},
                       {"loc": "when did the us host the world cup", "loc_ans": "1994"}]}
#: XiaojieGu/UltraEdit data/ultraeditbench.py:14-19
ULTRAEDITBENCH = {"prompt": "What is the capital of Vedria?", "rephrase_prompt": "Vedria's capital "
                  "is which city?", "ans": "Osk", "loc": "who wrote dune",
                  "loc_ans": "Frank Herbert"}


def _hop(path, prompt="p", target="t"):
    return {"path": path, "prompt": prompt, "subject": "s", "target": target}


#: qizhou000/UniEdit README.md:116-186
UNIEDIT = {
    "edit": {"prompt": "The genus of Rosa alba is", "target": "Rosa", "subject": "Rosa alba",
             "head_entity": {"id": "Q1", "label": "Rosa alba", "description": "", "aliases": []},
             "property": {"id": "P171", "label": "parent taxon"},
             "tail_entity": {"datatype": "wikibase-item", "value": {}},
             "single_inverse": False},
    "generality": {"0": {"path_type": "single", "prompt": "Rosa alba belongs to the genus",
                         "target": "Rosa", "paths": [["h_e", "r_e", "t_e", "f", "s"]],
                         "one_hops": [_hop(["h_e", "r_e", "t_e"])]}},
    "locality": {"0": {"loc_type": "none", "path_type": "single",
                       "prompt": "The genus of Pinus nigra is", "target": "Pinus",
                       "paths": [["e_0", "r_0", "e_1", "f", "s"]],
                       "one_hops": [_hop(["e_0", "r_0", "e_1"])]}},
}


def _task(cls, tmp_path, records, name="data.json", **config):
    path = tmp_path / name
    path.write_text(json.dumps(records))
    return cls(TaskOptions(data=str(path)), cls.Config(**config))


class Probe:
    """Scores a pair 1.0 when its target starts with 'R' (a stand-in for a model)."""

    def score(self, pairs):
        return [PairScore(float(p.target.startswith("R")), 0.0, 1, (0,)) for p in pairs]


def test_the_new_tasks_are_registered():
    assert {"wikibigedit", "qaedit", "ultraeditbench", "uniedit", "mquake"} <= set(TASKS.names())


# -- WikiBigEdit ---------------------------------------------------------------------------------
def test_wikibigedit_snapshots_form_one_time_ordered_stream(tmp_path, caplog):
    folder = tmp_path / "wbe"
    folder.mkdir()
    late = {**WIKIBIGEDIT, "update": "Which club does Bo play for?", "subject": "Bo",
            "mhop": None, "mhop_ans": None, "novel": 1}
    (folder / "wiki_big_edit_20240501_20240601.json").write_text(json.dumps([late]))
    (folder / "wiki_big_edit_20240401_20240501.json").write_text(json.dumps([WIKIBIGEDIT]))
    with caplog.at_level("WARNING"):
        records = WikiBigEditTask(TaskOptions(data=str(folder))).records()
    assert [r.extra["snapshot"] for r in records] == ["20240401_20240501", "20240501_20240601"]
    assert {r.group for r in records} == {STREAM_GROUP}  # the runner keeps the file order
    first, second = records
    assert first.prompt == WIKIBIGEDIT["update"] and first.target_new == "Rovers"
    assert first.paraphrases == (WIKIBIGEDIT["rephrase"],)
    assert (first.neighbours[0].prompt, first.neighbours[0].answer) == ("Who wrote Dune?",
                                                                         "Frank Herbert")
    assert {(q.kind, q.answer) for q in first.portability} == {("personas", "Rovers"),
                                                               ("mhop", "Bristol")}
    assert [q.kind for q in second.portability] == ["personas"]  # no multi-hop question found
    assert "novel (1 records)" in caplog.text.split("left out of the edits:")[1]
    shuffled = WikiBigEditTask(TaskOptions(data=str(folder)),
                               WikiBigEditTask.Config(order="shuffled")).records()
    assert {r.group for r in shuffled} == {None}


def test_wikibigedit_scores_personas_and_multi_hop_apart(tmp_path):
    task = _task(WikiBigEditTask, tmp_path, [WIKIBIGEDIT])
    rows = task.extra_metrics(Probe(), task.records(), [0])
    assert {r.metric: r.value for r in rows} == {"persona_acc": 1.0, "mhop_acc": 0.0}


def test_wikibigedit_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(RecordError, match=r"data.json: record 0: field 'ans'"):
        _task(WikiBigEditTask, tmp_path, [{**WIKIBIGEDIT, "ans": ""}]).records()
    with pytest.raises(RecordError, match=r"field 'mhop'"):
        _task(WikiBigEditTask, tmp_path, [{**WIKIBIGEDIT, "mhop": None}]).records()
    folder = tmp_path / "undated"
    folder.mkdir()
    (folder / "snapshot.json").write_text(json.dumps([WIKIBIGEDIT]))
    with pytest.raises(RecordError, match="snapshot.json has no snapshot dates"):
        WikiBigEditTask(TaskOptions(data=str(folder))).records()
    with pytest.raises(ValueError, match="train_fraction needs order=shuffled"):
        WikiBigEditTask.Config(train_fraction=0.5)


# -- QAEdit --------------------------------------------------------------------------------------
def test_qaedit_keeps_the_first_locality_question_as_the_neighbour(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        (record,) = _task(QAEditTask, tmp_path, [QAEDIT]).records()
    assert record.uid == "qaedit-1104" and record.target_new == "Wilt Chamberlain"
    assert [n.prompt for n in record.neighbours] == ["who wrote dune"]
    assert [n.answer for n in record.locality["more"]] == ["1994"]
    assert record.extra == {"source": "NQ"}
    assert "left out of the edits" not in caplog.text  # every field is read
    with pytest.raises(RecordError, match=r"record 0: field 'locality\[1\]\.loc_ans'"):
        bad = {**QAEDIT, "locality": [QAEDIT["locality"][0], {"loc": "q"}]}
        _task(QAEditTask, tmp_path, [bad]).records()
    with pytest.raises(RecordError, match="uid 'qaedit-1104' appears more than once"):
        _task(QAEditTask, tmp_path, [QAEDIT, QAEDIT]).records()


# -- UltraEditBench ------------------------------------------------------------------------------
def _ultra(i: int) -> dict:
    return {**ULTRAEDITBENCH, "prompt": f"What is the capital of region {i}?"}


def test_ultraeditbench_keeps_the_first_take_records(tmp_path, caplog):
    records = [_ultra(i) for i in range(30)]
    records[3] = {**records[3], "novel": "x"}
    with caplog.at_level("WARNING"):
        task = _task(UltraEditBenchTask, tmp_path, records, take=10)
        loaded = task.records()
    assert [r.prompt for r in loaded] == [f"What is the capital of region {i}?" for i in range(10)]
    assert loaded[0].subject == loaded[0].prompt and loaded[0].target_new == "Osk"
    assert loaded[0].paraphrases == (ULTRAEDITBENCH["rephrase_prompt"],)
    assert "novel (1 records)" in caplog.text
    assert len(_task(UltraEditBenchTask, tmp_path, records, take=0).records()) == 30


def test_ultraeditbench_refuses_a_bad_record_by_file_record_and_field(tmp_path):
    records = [_ultra(i) for i in range(5)]
    records[4] = {**records[4], "ans": 3}
    with pytest.raises(RecordError, match=r"data.json: record 4: field 'ans'"):
        _task(UltraEditBenchTask, tmp_path, records).records()
    (tmp_path / "cut.json").write_text(json.dumps(records[:2])[:-1])
    with pytest.raises(RecordError, match="cut.json: the JSON list ends without its closing"):
        UltraEditBenchTask(TaskOptions(data=str(tmp_path / "cut.json"))).records()
    lenient = UltraEditBenchTask(TaskOptions(data=str(tmp_path / "data.json"), lenient=True))
    assert len(lenient.records()) == 4 and lenient.skipped_records() == 1


# -- UniEdit -------------------------------------------------------------------------------------
def _double(prompt: str) -> dict:
    one = {"path_type": "single", "prompt": "x", "target": "y",
           "paths": [["h_e", "r_e", "t_e", "f", "s"]], "one_hops": []}
    return {"path_type": "double", "prompt": prompt, "target": "Yes",
            "single_path1": one, "single_path2": one}


def test_uniedit_reads_domain_files_keyed_by_sample_id(tmp_path, caplog):
    folder = tmp_path / "test"
    folder.mkdir()
    multi = json.loads(json.dumps(UNIEDIT))
    multi["generality"]["0"]["paths"] = [["h_e", "r_e", "t_e", "f", "s"],
                                         ["t_e", "r_1", "e_1", "f", "s"]]
    reverse = json.loads(json.dumps(UNIEDIT))
    reverse["generality"]["0"]["paths"] = [["t_e", "r_e", "h_e", "b", "m"]]
    same = {**UNIEDIT, "generality": {"0": _double("Is Rosa alba in the same genus as Rosa x?")}}
    (folder / "biology.json").write_text(json.dumps({"0": UNIEDIT, "7": multi}))
    (folder / "art.json").write_text(json.dumps({"3": reverse, "4": same}))
    with caplog.at_level("WARNING"):
        records = UniEditTask(TaskOptions(data=str(folder))).records()
    assert [r.uid for r in records] == ["art-3", "art-4", "biology-0", "biology-7"]
    kinds = [r.portability[0].kind for r in records]
    assert kinds == ["relation_reverse", "same_entity", "rephrase", "multi_hop"]
    assert records[1].portability[0].prompt.endswith(" The answer is (Yes/No):")
    assert records[2].target_new == "Rosa" and records[2].subject == "Rosa alba"
    assert [n.answer for n in records[2].locality["uniedit"]] == ["Pinus"]
    warned = caplog.text.split("left out of the edits:")[1]
    assert "edit.head_entity" in warned and "locality.0.loc_type" in warned
    rows = UniEditTask(TaskOptions(data=str(folder))).extra_metrics(Probe(), records, [0, 2])
    assert {r.metric for r in rows} == {"uniedit_relation_reverse_acc", "uniedit_rephrase_acc"}


def test_uniedit_refuses_bad_input_naming_the_sample(tmp_path):
    path = tmp_path / "biology.json"
    path.write_text(json.dumps({"12": {**UNIEDIT, "edit": {**UNIEDIT["edit"], "target": ""}}}))
    with pytest.raises(RecordError, match=r"biology.json: sample '12': field 'edit.target'"):
        UniEditTask(TaskOptions(data=str(path))).records()
    path.write_text(json.dumps([UNIEDIT]))
    with pytest.raises(RecordError, match="biology.json: expected UniEdit's layout"):
        UniEditTask(TaskOptions(data=str(path))).records()


# -- MQuAKE-Remastered ---------------------------------------------------------------------------
def test_mquake_defaults_to_remastered_with_subsets_by_name():
    def source(**config):
        return MquakeTask(TaskOptions(), MquakeTask.Config(**config))._eval_source()

    assert source().endswith("/datasets/MQuAKE-Remastered-CF-3k.json")
    assert "MQuAKE-Remastered" in MquakeTask.default_data
    assert source(subset="CF-6334").endswith("MQuAKE-Remastered-CF-6334.json")
    assert source(subset="T").endswith("MQuAKE-Remastered-T.json")
    assert source(release="original").endswith("princeton-nlp/MQuAKE/main/datasets/"
                                               "MQuAKE-CF-3k-v2.json")
    assert set(RELEASES["remastered"]) == {"CF-3k", "CF-9k", "CF-6334", "T"}
    with pytest.raises(ValueError, match="subset 'CF-6334' is not in the original release"):
        MquakeTask.Config(release="original", subset="CF-6334")
    with pytest.raises(ValueError, match="release must be one of"):
        MquakeTask.Config(release="v3")


def test_mquake_reads_the_hugging_face_copy_with_flat_targets(tmp_path):
    from test_mquake import ONE_EDIT

    flat = json.loads(json.dumps(ONE_EDIT))
    rewrite = flat["requested_rewrite"][0]
    rewrite["target_new_str"] = rewrite.pop("target_new")["str"]
    rewrite["target_true_str"] = rewrite.pop("target_true")["str"]
    flat["split"] = {"1000": ["edited"]}
    (record,) = _task(MquakeTask, tmp_path, [flat]).records()
    assert (record.target_new, record.target_true) == ("Croatia", "United States of America")


def test_a_wikibigedit_run_stores_the_kinds_apart_in_stream_order(tmp_path, micro_llama):
    from editbench.core.store import load_results
    from editbench.harness.plan.resolve import resolve
    from editbench.harness.plan.settings import RunSpec
    from editbench.harness.running.runner import Runner

    folder = tmp_path / "wbe"
    folder.mkdir()
    for month, (old, new) in enumerate((("20240401", "20240501"), ("20240501", "20240601"))):
        records = [{**WIKIBIGEDIT, "update": f"Which club does player {month}-{i} play for?",
                    "subject": f"player {month}-{i}"} for i in range(2)]
        (folder / f"wiki_big_edit_{old}_{new}.json").write_text(json.dumps(records))
    spec = RunSpec(methods=("ft-m",), task="wikibigedit", data=str(folder),
                   model=str(micro_llama), edits=3, batch_size=1, checkpoints="3",
                   out=tmp_path / "out", params={"ft-m": {"steps": "1"}}, gen_eval=False)
    plan = resolve(spec)
    assert [r.subject for r in plan.records] == ["player 0-0", "player 0-1", "player 1-0"]
    Runner(plan).run()
    metrics = set(load_results(spec.out).scores()["metric"])
    assert {"persona_acc", "mhop_acc", "portability_acc", "generalization_acc"} <= metrics
