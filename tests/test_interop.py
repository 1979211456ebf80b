"""Results outside editbench: each edit's text in the store, the run's edits as an
lm-evaluation-harness task (scored by lm-eval itself where it is installed), and the saved model's
card and tokenizer."""

import json
import sqlite3

import pytest
import yaml
from click.testing import CliRunner
from conftest import micro_edits, write_edits

import editbench
from editbench.core.store import SCHEMA_VERSION, ResultsStore, load_results
from editbench.harness.cli.group import main

N_EDITS = 6


def _run(folder, model):
    """FT-M on the micro Llama, generated scoring on, the model saved after every edit."""
    edits = write_edits(folder / "mine.jsonl", N_EDITS)
    return editbench.run({"task": str(edits), "methods": ["ft-m"], "batch_size": 3,
                          "device": "cpu", "checkpoints": [3, N_EDITS],
                          # a step that makes some edits pass and leaves others failing
                          "params": {"ft-m": {"lr": 1e-2}}},
                         model=str(model), out=folder / "results", save_model=N_EDITS,
                         gen_eval=True)


@pytest.fixture(scope="module")
def interop_run(tmp_path_factory, micro_llama):
    folder = tmp_path_factory.mktemp("interop")
    with _run(folder, micro_llama) as store:
        run_id = store.runs()["run_id"].iloc[0]
    return folder / "results", run_id


def _loader(folder):
    """A YAML loader that reads lm-eval's ``!function`` tag as its text."""
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: f"!function {node.value}")
    return Loader


def test_the_store_keeps_each_edits_text(interop_run):
    out, run_id = interop_run
    with load_results(out) as store:
        texts = store.edit_texts(run_id)
    assert list(texts["position"]) == list(range(N_EDITS))
    given = {e["uid"]: e for e in micro_edits(N_EDITS)}
    for uid, record in zip(texts["uid"], texts["record"]):
        edit = given[uid]
        assert (record["prompt"], record["subject"], record["target_new"]) == (
            edit["prompt"], edit["subject"], edit["target_new"])
        assert record["paraphrases"] == edit["paraphrases"]
        assert record["neighbours"] == edit["neighbours"] and "extra" not in record


def test_a_run_stored_without_texts_gains_them_when_its_command_runs_again(interop_run,
                                                                            micro_llama):
    out, run_id = interop_run
    with ResultsStore(out) as store:
        before = store.edit_texts(run_id)
        store.conn.execute("DELETE FROM edit_texts")
    with _run(out.parent, micro_llama) as store:  # every method done: nothing is redone
        after = store.edit_texts(run_id)
        assert len(store.checkpoints()) == 2
    assert after.equals(before)


def _fill(store, records):
    store.ensure_run("r1", task="t", model="m", config={}, versions={}, device="cpu", seed=0,
                     dataset_hash="h", n_edits=len(records))
    store.save_edit_texts("r1", [(i, r["uid"], r) for i, r in enumerate(records)])


def test_a_store_from_before_edit_texts_reads_exports_in_one_line_and_migrates(tmp_path):
    with ResultsStore(tmp_path) as store:
        _fill(store, micro_edits(2))
        store.conn.execute("DROP TABLE edit_texts")
        store.conn.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    with load_results(tmp_path) as old:
        assert old.version == 3 and old.edit_texts().empty and old.edit_text_count("r1") == 0
    result = CliRunner().invoke(main, ["export", str(tmp_path), "--lm-eval",
                                       "--out", str(tmp_path.parent / "lm")])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "holds no edit texts" in result.output
    with ResultsStore(tmp_path) as store:  # a writer migrates it
        assert store.version == SCHEMA_VERSION == 4 and store.edit_texts().empty
        store.save_edit_texts("r1", [(0, "u", {"prompt": "p"})])
        assert store.edit_text_count("r1") == 1
    assert sqlite3.connect(tmp_path / "results.sqlite").execute(
        "SELECT value FROM meta").fetchone() == ("4",)


#: text that YAML, JSON, Markdown or a template would misread if it were not escaped
AWKWARD = 'Kalo "Mirve": {{ x }} # ---\n\\ <b>&amp; é'


def test_the_export_escapes_every_text_and_reads_back_as_written(tmp_path):
    record = {"uid": "u: 1", "prompt": AWKWARD + " lives in", "subject": AWKWARD,
              "target_new": "Fengal\n- Vale", "paraphrases": [AWKWARD],
              "neighbours": [{"prompt": "'N' lives in", "answer": "Brajar: Port"}],
              "portability": [{"prompt": "Q? " + AWKWARD, "answer": "A", "kind": "alias"}]}
    with ResultsStore(tmp_path / "store") as store:
        _fill(store, [record])
    out = tmp_path / "lm"
    result = CliRunner().invoke(main, ["export", str(tmp_path / "store"), "--lm-eval",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    efficacy = [json.loads(line) for line in (out / "efficacy.jsonl").read_text().splitlines()]
    assert [(d["prompt"], d["target"], d["continuation"]) for d in efficacy] == [
        (record["prompt"], "Fengal\n- Vale", " Fengal\n- Vale")]
    (edit,) = [json.loads(line) for line in (out / "edits.jsonl").read_text().splitlines()]
    assert {k: edit[k] for k in record} == record
    locality = json.loads((out / "locality.jsonl").read_text())
    assert locality["target"] == "Brajar: Port"  # no unedited answers stored: the dataset's
    names = sorted(p.name for p in out.glob("*.yaml"))
    assert names == sorted(f"{n}.yaml" for n in (
        "efficacy", "efficacy_gen", "generalization", "generalization_gen", "locality",
        "locality_gen", "portability"))
    for path in out.glob("*.yaml"):
        config = yaml.load(path.read_text(), Loader=_loader(out))
        assert config["task"] == f"editbench_r1_{path.stem}" and config["tag"] == ["editbench_r1"]
        assert config["custom_dataset"] == "!function editbench_data.load"
        assert (out / config["dataset_kwargs"]["file"]).is_file()
        generated = path.stem.endswith("_gen")
        assert config["output_type"] == ("generate_until" if generated else "loglikelihood")
        assert config["metric_list"][0]["metric"] == ("exact_match" if generated else "acc")


def test_the_export_normalises_answers_as_the_run_does():
    import re

    from editbench.harness.evaluation.generated import NORMALISERS
    from editbench.reports.lmeval_task import NORMALISATIONS

    def lm_eval_form(text, options):  # what lm-eval's exact_match does with the options
        for pattern in options["regexes_to_ignore"]:
            text = re.sub(pattern, "", text)
        text = text.lower()
        if options["ignore_punctuation"]:
            import string
            text = text.translate(str.maketrans("", "", string.punctuation))
        return text

    pairs = [(" The Fengal Vale.", "fengal vale"), ("fengal  vale", "Fengal Vale"),
             ("an Apple, the pie", "apple, pie"), ("St. Louis", "St Louis"),
             ("Fengal Valeside", "Fengal Vale"), ("\"Brajar Port\"!", "brajar port")]
    for rule, options in NORMALISATIONS.items():
        for answer, target in pairs:
            ours = NORMALISERS[rule](answer) == NORMALISERS[rule](target)
            assert (lm_eval_form(answer, options) == lm_eval_form(target, options)) == ours, (
                rule, answer, target)


def test_the_export_never_writes_into_a_folder_it_did_not_write(tmp_path):
    with ResultsStore(tmp_path / "store") as store:
        _fill(store, micro_edits(2))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    args = ["export", str(tmp_path / "store"), "--lm-eval", "--out"]
    result = CliRunner().invoke(main, [*args, str(mine)])
    assert result.exit_code == 1 and "editbench did not write" in result.output
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    inside = CliRunner().invoke(main, [*args, str(tmp_path / "store" / "models" / "x")])
    assert inside.exit_code == 1 and "inside the results folder" in inside.output
    out = tmp_path / "lm"
    assert CliRunner().invoke(main, [*args, str(out)]).exit_code == 0
    (out / "mine.txt").write_text("keep")
    again = CliRunner().invoke(main, [*args, str(out), "--edits", "1"])  # replaces its own files
    assert again.exit_code == 0, again.output
    assert (out / "mine.txt").read_text() == "keep"
    assert len((out / "efficacy.jsonl").read_text().splitlines()) == 1


def test_the_export_names_a_bad_run_or_edit_count(tmp_path):
    with ResultsStore(tmp_path / "store") as store:
        _fill(store, micro_edits(2))
    args = ["export", str(tmp_path / "store"), "--lm-eval", "--out", str(tmp_path / "lm")]
    for extra, words in ((["--run", "zz"], "--run zz: no run"),
                         (["--edits", "9"], "--edits 9: run r1 made 2 edits"),
                         (["--method", "ft-m"], "--method ft-m: run r1 has no checkpoint")):
        result = CliRunner().invoke(main, [*args, *extra])
        assert result.exit_code == 1 and words in result.output, result.output
        assert result.output.count("\n") == 1
    alone = CliRunner().invoke(main, ["export", str(tmp_path / "store"), "--edits", "1"])
    assert alone.exit_code == 2 and "--edits goes with --lm-eval" in alone.output


def test_lm_eval_scores_the_saved_model_as_editbench_did(interop_run, tmp_path):
    """lm-evaluation-harness itself, on the exported task and the model the run saved: its
    whole-answer greedy ``acc`` is editbench's teacher-forced pass, prompt by prompt, and its
    exact match editbench's generated verdict (the locality one too: the edited model answers as
    the unedited one did). Locality by loglikelihood has no per-prompt twin in editbench (its
    teacher-forced locality compares top-1 tokens along the dataset's answer): its documents hold
    the unedited model's stored answers."""
    pytest.importorskip("lm_eval", reason='lm-eval is an extra: pip install "editbench[lm-eval]"')
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out, run_id = interop_run
    task_folder = tmp_path / "lm"
    result = CliRunner().invoke(main, ["export", str(out), "--lm-eval", "--out", str(task_folder),
                                       "--method", "ft-m"])
    assert result.exit_code == 0, result.output
    tag = f"editbench_{run_id[:8]}"
    compared = {"efficacy": "tf", "generalization": "tf", "efficacy_gen": "gen",
                "generalization_gen": "gen", "locality_gen": "gen"}
    manager = TaskManager(include_path=str(task_folder))

    def lm_eval(model, names):
        return simple_evaluate(model="hf", model_args=f"pretrained={model},dtype=float32",
                               tasks=[f"{tag}_{n}" for n in names], task_manager=manager,
                               device="cpu", batch_size=8, log_samples=True)["samples"]

    samples = lm_eval(out / "models" / run_id / "ft-m" / f"edits-{N_EDITS}", compared)
    verdicts = []
    for name, verdict in compared.items():
        docs = (task_folder / f"{name.removesuffix('_gen')}.jsonl").read_text().splitlines()
        assert len(samples[f"{tag}_{name}"]) == len(docs) > 0
        for sample in samples[f"{tag}_{name}"]:
            theirs = sample["exact_match" if name.endswith("_gen") else "acc"]
            verdicts.append((name, sample["doc"]["position"], bool(theirs),
                             sample["doc"]["editbench"][verdict]))
    assert [v for v in verdicts if v[2] != v[3]] == []
    assert {v[3] for v in verdicts} == {True, False}  # the comparison saw passes and failures
    with load_results(out) as store:
        answers = store.load_base_generations(run_id)
    locality = [json.loads(line)
                for line in (task_folder / "locality.jsonl").read_text().splitlines()]
    assert [d["target"] for d in locality] == [answers[d["generation_prompt"]].strip()
                                               for d in locality]


def _front_matter(text):
    head, body = text.removeprefix("---\n").split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_the_saved_model_carries_its_card(interop_run, micro_llama):
    out, run_id = interop_run
    folder = out / "models" / run_id / "ft-m" / f"edits-{N_EDITS}"
    card, body = _front_matter((folder / "README.md").read_text())
    facts = card["editbench"]
    assert card["library_name"] == "transformers" and "base_model" not in card  # a local folder
    assert (facts["base_model"], facts["method"], facts["preset"], facts["edits"]) == (
        str(micro_llama), "ft-m", None, N_EDITS)
    assert facts["run_id"] == run_id and facts["task"] == "jsonl" and facts["protocol"]
    assert facts["version"] == editbench.__version__ and len(facts["code"]) == 16
    with load_results(out) as store:
        summary = store.summary()
    stored = summary[summary["n_edits"] == N_EDITS].iloc[0]
    assert abs(facts["scores"]["efficacy_acc"] - stored["efficacy_acc"]) < 1e-6
    assert f"--edits {N_EDITS}" in body


def test_the_card_escapes_what_it_quotes():
    from editbench.harness.running.saved import ModelCard

    card = ModelCard(base_model="org/model", method="ft-m@<b>x</b>", preset="<b>x</b>",
                     n_edits=3, run_id="r" * 16, task=AWKWARD, protocol="p: q",
                     code={"editbench": "0.1.0", "code": "c" * 16}, scores={"a|b": 0.5})
    front, body = _front_matter(card.text())
    assert front["base_model"] == "org/model" and front["editbench"]["task"] == AWKWARD
    assert front["editbench"]["protocol"] == "p: q" and front["editbench"]["preset"] == "<b>x</b>"
    assert "<b>" not in body and "{{" not in body and "a\\|b" in body
    title = body.lstrip("\n").splitlines()[0]
    assert title.startswith("# ft-m@\\<b\\>x\\</b\\> edit of org/model")


def test_the_saved_tokenizer_names_a_class_transformers_4_has(interop_run, micro_llama):
    from transformers import AutoTokenizer

    out, run_id = interop_run
    folder = out / "models" / run_id / "ft-m" / f"edits-{N_EDITS}"
    config = json.loads((folder / "tokenizer_config.json").read_text())
    # transformers 4's tokenizer classes (its TOKENIZER_MAPPING's names, or the generic one)
    assert config["tokenizer_class"] != "TokenizersBackend"
    assert not {"is_local", "local_files_only"} & set(config)
    text = "Fact: Kalo Mirve0 lives in Fengal Vale"
    assert (AutoTokenizer.from_pretrained(folder)(text)["input_ids"]
            == AutoTokenizer.from_pretrained(micro_llama)(text)["input_ids"])


def test_a_named_tokenizer_class_is_left_as_it_is(tmp_path):
    from editbench.harness.running.saved import portable_tokenizer_config

    for named, expected in (("TokenizersBackend", "PreTrainedTokenizerFast"),
                            ("LlamaTokenizer", "LlamaTokenizer")):
        (tmp_path / "tokenizer.json").write_text("{}")
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": named, "bos_token": "<s>"}))
        portable_tokenizer_config(tmp_path)
        config = json.loads((tmp_path / "tokenizer_config.json").read_text())
        assert config == {"tokenizer_class": expected, "bos_token": "<s>"}


def test_transformers_4_loads_the_saved_folder(interop_run):
    """Where a Python with transformers 4 is named (``EDITBENCH_TRANSFORMERS4_PYTHON``, e.g. a
    venv with transformers==4.56.2), it loads the saved tokenizer and config and encodes as this
    transformers does."""
    import os
    import subprocess

    from transformers import AutoTokenizer

    python = os.environ.get("EDITBENCH_TRANSFORMERS4_PYTHON")
    if not python:
        pytest.skip("set EDITBENCH_TRANSFORMERS4_PYTHON to a Python with transformers 4.x")
    out, run_id = interop_run
    folder = out / "models" / run_id / "ft-m" / f"edits-{N_EDITS}"
    text = "Fact: Kalo Mirve0 lives in Fengal Vale"
    script = ("import json, sys, transformers as t; f = sys.argv[1]; "
              "tok = t.AutoTokenizer.from_pretrained(f); t.AutoConfig.from_pretrained(f); "
              "ids = tok(sys.argv[2])['input_ids']; "
              "print(json.dumps([t.__version__, type(tok).__name__, ids]))")
    done = subprocess.run([python, "-c", script, str(folder), text], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    version, name, ids = json.loads(done.stdout.strip().splitlines()[-1])
    assert version.startswith("4.") and name == "PreTrainedTokenizerFast"
    assert ids == AutoTokenizer.from_pretrained(folder)(text)["input_ids"]
