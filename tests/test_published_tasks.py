import html
import http.server
import json
import sys
import threading
import types
from functools import partial

import pytest
from click.testing import CliRunner

from editbench.core.sources import RecordError
from editbench.core.store import load_results
from editbench.harness.cli.group import main
from editbench.harness.plan.resolve import resolve
from editbench.harness.plan.settings import RunSpec
from editbench.harness.running.runner import Runner
from editbench.tasks import TASKS, TaskOptions


def _task(name, data, **config):
    cls = TASKS.get(name)
    return cls(TaskOptions(data=str(data)), cls.Config(**config))


def test_zsre_sample_maps_every_field(shared_data):
    records = _task("zsre", shared_data / "zsre.json").records()
    assert len(records) == 300
    first = records[0]
    assert first.prompt == "What is the product made by UniFirst?"
    assert (first.subject, first.target_new, first.target_true) == (
        "UniFirst", "unmanned aircraft", "uniform"
    )
    assert first.paraphrases == ("What will be the product of UniFirst?",)
    assert first.neighbours[0].prompt == (
        "nq question: john goodman's character in the big lebowski?"
    )
    assert first.neighbours[0].answer == "Walter Sobchak"


def test_zsre_reads_the_file_rome_reads_and_edits_towards_either_papers_target(shared_data):
    from editbench.tasks.zsre import ZsreTask

    assert ZsreTask.default_data == "https://rome.baulab.info/data/dsets/zsre_mend_eval.json"
    first = _task("zsre", shared_data / "zsre.json", target="answers").records()[0]
    # ROME, MEMIT, AlphaEdit: answers[0]
    assert (first.target_new, first.target_true) == ("uniform", None)
    with pytest.raises(ValueError, match="target must be one of alt, answers"):
        _task("zsre", shared_data / "zsre.json", target="truth")


def test_consistency_has_one_tfidf_space_per_run_whatever_is_generated(shared_data):
    """The space is fitted on the references of every record the task reads, never on generated
    text, so two methods (two generations) are scored on one scale."""
    from editbench.core.metrics import TfIdf

    task = _task("counterfact", shared_data / "counterfact.json")
    space = task._tfidf_space()
    assert task._tfidf_space() is space
    references = [text for r in task.records() for text in task._references(r)]
    assert space.idf == TfIdf(references).idf
    record = task.records()[0]
    assert task._references(record)[0].endswith(f" {record.target_new}.")


def test_consistency_reads_rome_s_published_idf_and_snippets(shared_data, tmp_path):
    import numpy as np

    (tmp_path / "tfidf_vocab.json").write_text(
        json.dumps({"english": 0, "language": 1, "french": 2})
    )
    np.save(tmp_path / "idf.npy", np.array([2.0, 1.0, 3.0]))
    snippets = {
        "P103": {"Q1860": [{"name": "Someone", "text": "Someone speaks English, the language."}]}
    }
    (tmp_path / "snippets.json").write_text(json.dumps(snippets))
    task = _task("counterfact", shared_data / "counterfact.json", idf=str(tmp_path),
                 snippets=str(tmp_path / "snippets.json"))
    assert task._tfidf_space().idf == {"english": 2.0, "language": 1.0, "french": 3.0}
    record = task.records()[0]
    assert (record.extra["relation_id"], record.extra["target_new_id"]) == ("P103", "Q1860")
    assert task._references(record) == ["Someone speaks English, the language."]
    np.save(tmp_path / "idf.npy", np.array([2.0]))
    with pytest.raises(ValueError, match="do not match"):
        _task("counterfact", shared_data / "counterfact.json", idf=str(tmp_path))._tfidf_space()


def test_counterfact_reads_both_published_layouts(shared_data):
    rome = _task("counterfact", shared_data / "counterfact.json").records()
    flat = _task("counterfact", shared_data / "counterfact_knowedit.json").records()
    assert len(rome) == 7 and len(flat) == 300
    for records in (rome, flat):
        first = records[0]
        assert first.uid == "cf-0"
        assert first.prompt == "The mother tongue of Danielle Darrieux is"
        assert (first.target_new, first.target_true) == ("English", "French")
    assert len(rome[0].neighbours) == 10 and all(n.answer == "French" for n in rome[0].neighbours)
    assert len(rome[0].extra["generation_prompts"]) == 10
    assert flat[0].neighbours[0].prompt == "Michel Rocard is a native speaker of"


def test_fever_accepts_the_published_key_variants(tmp_path):
    malmen = [{"prompt": "Claim: the sky is green.", "equiv_prompt": ["Claim: green is the sky."],
               "alt": "SUPPORTS", "unrel_prompt": "nq question: who wrote hamlet?",
               "unrel_ans": "Shakespeare"}]
    mend = {"input": "Claim: water is dry.", "alternatives": ["SUPPORTS"],
            "filtered_rephrases": ["Water: dry."], "prediction": "REFUTES", "logit": -1.2}
    (tmp_path / "fever.json").write_text(json.dumps(malmen))
    (tmp_path / "fever.jsonl").write_text(json.dumps(mend) + "\n")
    a = _task("fever", tmp_path / "fever.json").records()[0]
    b = _task("fever", tmp_path / "fever.jsonl").records()[0]
    assert (a.target_new, a.paraphrases, a.neighbours[0].answer) == (
        "SUPPORTS", ("Claim: green is the sky.",), "Shakespeare"
    )
    assert (b.prompt, b.target_new, b.target_true, b.neighbours) == (
        "Claim: water is dry.", "SUPPORTS", "REFUTES", ()
    )


def _broken_zsre(tmp_path):
    good = {"subject": "X", "src": "What is X?", "rephrase": "X is what?", "alt": "a",
            "answers": ["b"], "loc": "nq question: q", "loc_ans": "c"}
    bad = {k: v for k, v in good.items() if k != "alt"}
    path = tmp_path / "zsre_bad.json"
    path.write_text(json.dumps([good, bad, {**good, "rephrase": 3}, good]))
    return path


def test_a_malformed_record_names_file_index_and_field(tmp_path):
    with pytest.raises(
        RecordError,
        match=r"zsre_bad.json: record 1: field 'alt': is required \(accepted names: alt, ans\)",
    ):
        _task("zsre", _broken_zsre(tmp_path)).records()


def test_lenient_loading_counts_what_it_skips(tmp_path, caplog):
    task = TASKS.get("zsre")(TaskOptions(data=str(_broken_zsre(tmp_path)), lenient=True))
    with caplog.at_level("WARNING"):
        records = task.records()
    assert len(records) == 2 and task.skipped_records() == 2
    assert "skipped 2 malformed records" in caplog.text and "'rephrase'" in caplog.text


def test_train_split_never_overlaps_eval(shared_data, tmp_path):
    task = _task("zsre", shared_data / "zsre.json", train_fraction=0.5)
    train, evaluation = task.records("train"), task.records("eval")
    assert len(train) + len(evaluation) == 300 and 100 < len(train) < 200
    assert not {r.uid for r in train} & {r.uid for r in evaluation}
    with pytest.raises(ValueError, match="train_data=FILE"):
        _task("zsre", shared_data / "zsre.json").records("train")


def test_the_runner_refuses_a_train_split_that_overlaps(shared_data, tmp_path, micro_gpt2):
    data = str(shared_data / "zsre.json")
    spec = RunSpec(
        task="zsre", data=data, model=str(micro_gpt2), edits=5, out=tmp_path / "o", device="cpu",
        params={"zsre": {"train_data": data}}, cache_dir=tmp_path
    )
    with pytest.raises(ValueError, match="overlaps the evaluated edits"):
        Runner(resolve(spec)).train_records()


def test_loads_from_a_url_once_then_from_the_cache(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "cf.json").write_text(json.dumps([{"case_id": 5, "prompt": "P of S is",
                                                  "subject": "S", "target_new": "a",
                                                  "ground_truth": "b"}]))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/cf.json"
    try:
        options = TaskOptions(data=url, cache_dir=tmp_path / "cache")
        assert TASKS.get("counterfact")(options).records()[0].uid == "cf-5"
    finally:
        server.shutdown()
        server.server_close()
    again = TASKS.get("counterfact")(TaskOptions(data=url, cache_dir=tmp_path / "cache")).records()
    assert again[0].uid == "cf-5"  # served from the cache: the server is gone


def test_loads_a_hugging_face_datasets_id(monkeypatch):
    fake = types.ModuleType("datasets")
    calls = []

    def load_dataset(name, split):
        calls.append((name, split))
        return [{"case_id": 1, "prompt": "P of S is", "subject": "S", "target_new": "a",
                 "ground_truth": "b"}]

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    records = TASKS.get("counterfact")(TaskOptions(data="someone/counterfact:test")).records()
    assert calls == [("someone/counterfact", "test")] and records[0].uid == "cf-1"


@pytest.mark.parametrize("task, file, edits", [
    ("zsre", "zsre.json", 6),
    ("counterfact", "counterfact.json", 4),
    ("counterfact", "counterfact_knowedit.json", 6),
])
def test_a_few_edits_end_to_end_store_every_metric_of_the_task(
    shared_data, tmp_path, micro_gpt2, task, file, edits
):
    spec = RunSpec(
        methods=("ft-m",), task=task, data=str(shared_data / file), model=str(micro_gpt2),
        edits=edits, batch_size=2, out=tmp_path / "out", device="cpu", cache_dir=tmp_path,
        params=(
            {"counterfact": {"gen_max_new_tokens": "8", "gen_prompts": "2"}}
            if task == "counterfact"
            else {}
        )
    )
    assert Runner(resolve(spec)).run().ok
    metrics = set(load_results(spec.out).scores()["metric"])
    expected = {"efficacy_acc", "generalization_acc", "specificity_agree", "specificity_acc"}
    if task == "counterfact":
        expected |= {"efficacy_success", "efficacy_magnitude", "generalization_success",
                     "specificity_magnitude"}
    if file == "counterfact.json":
        expected |= {"fluency_ngram_entropy", "consistency_tfidf"}
    assert expected <= metrics
    if task == "counterfact":  # the task's metric descriptions reach the report through the store
        result = CliRunner().invoke(
            main, ["report", str(spec.out), "--html", str(tmp_path / "html")]
        )
        assert result.exit_code == 0, result.output
        page = html.unescape((tmp_path / "html" / "index.html").read_text(encoding="utf-8"))
        assert "P(new) > P(true) at the edit prompt (ROME ES)" in page
        assert "share of neighbourhood answer tokens where the edited model's top-1 equals" in page


def test_fever_end_to_end_from_a_file_the_test_makes(tmp_path, micro_gpt2):
    rows = [{"prompt": f"Claim {i}: the moon is cheese.",
             "equiv_prompt": [f"Claim {i}: cheese is the moon."],
             "alt": "SUPPORTS", "unrel_prompt": "nq question: who wrote hamlet?",
             "unrel_ans": "Shakespeare"}
            for i in range(4)]
    (tmp_path / "fever_eval.json").write_text(json.dumps(rows))
    spec = RunSpec(
        methods=("ft-l",), task="fever", data=str(tmp_path / "fever_eval.json"),
        model=str(micro_gpt2), edits=4, batch_size=2, out=tmp_path / "out", device="cpu",
        cache_dir=tmp_path
    )
    assert Runner(resolve(spec)).run().ok
    assert len(load_results(spec.out).checkpoints()) == 2
