"""Property-based fuzzing (Hypothesis) of what a user hands editbench: option values for every
command, records in every loader's published layout, damaged result stores.

The property, everywhere: the command exits 0 with a correct result, or it ends in one line
(``Error: ...``) without a traceback; and a store it was pointed at keeps its bytes. The default
profile tries a few examples per test (the suite stays fast and deterministic); ``pytest
tests/test_fuzz.py --hypothesis-profile long`` is the long run (profiles: ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import assume, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_faults_outputs import store_bytes  # noqa: E402
from test_knowedit import RECORD as KNOWEDIT  # noqa: E402
from test_mquake import TWO_EDITS  # noqa: E402
from test_new_loaders import QAEDIT, ULTRAEDITBENCH, UNIEDIT, WIKIBIGEDIT  # noqa: E402
from test_report import build_store  # noqa: E402

from editbench.core.records import EditRecord, dataset_hash  # noqa: E402
from editbench.core.store import load_results, schema_columns  # noqa: E402
from editbench.core.task import TaskOptions  # noqa: E402
from editbench.harness.cli.group import explain, main  # noqa: E402
from editbench.tasks import TASKS  # noqa: E402

#: examples tried per test and how they ended, printed at the end of each test (``pytest -s``
#: shows them: the long run's figures)
TALLY: Counter = Counter()


def tally(test: str, outcome: str) -> None:
    TALLY[test, outcome] += 1


def report_tally(test: str) -> None:
    counts = {outcome: n for (name, outcome), n in sorted(TALLY.items()) if name == test}
    print(f"\nfuzz {test}: {sum(counts.values())} examples ({counts})")


@pytest.fixture(autouse=True)
def _in_a_scratch_folder(tmp_path, monkeypatch):
    """Generated paths may be relative ("-" as a folder of pages): they land here, never in the
    checkout."""
    monkeypatch.chdir(tmp_path)


def holds(result, *, success: str | None = None, test: str = "") -> str:
    """The property: exit 0 (with ``success`` in the output where given), or one ``Error:`` line
    and no traceback; returns the output."""
    output = result.output
    tally(test, "exit 0" if result.exit_code == 0 else "one line")
    assert "Traceback" not in output, output[-3000:]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}")
    if result.exit_code == 0:
        assert success is None or success in output, output[-3000:]
        return output
    assert result.exit_code in (1, 2), output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output[-3000:]
    assert len(errors[0]) < 2000, errors[0][:300]
    return output


def invoke(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


# -- values ----------------------------------------------------------------------------------------
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
SMALL = st.integers(1, 8).map(str)  # values a run takes, so that some examples run through
NUMBER_TEXT = st.one_of(
    SMALL, SMALL, SMALL, st.integers(-10**25, 10**25).map(str),
    st.sampled_from(["0", "-1", "1", "nan", "inf", "-inf", "1e3", "0.5", "", " ", "1,2", "x"]),
    st.floats(allow_nan=True, allow_infinity=True).map(str))
LIST_TEXT = st.one_of(
    st.lists(st.integers(1, 6), min_size=1, max_size=3).map(lambda xs: ",".join(map(str, xs))),
    st.lists(st.integers(-5, 50), max_size=4).map(lambda xs: ",".join(map(str, xs))),
    st.sampled_from(["", ",", ", ,", "1,,2", "a,b", "10,5", "99999999999999999999", " 2 "]))
METHOD_TEXT = st.one_of(st.sampled_from(["ft-m", "ft-l", "ft-m,ft-l", "", ", ,", "ft-m,ft-m",
                                         "nosuch", "ft-m@nosuch", " ft-m ", "memit", "grace"]),
                        st.sampled_from(["ft-m", "ft-l", "grace"]), TEXT)


@st.composite
def run_options(draw, tmp: Path, store: Path) -> list[str]:
    """One to three of ``run``'s options with generated values (the model, task and data come
    from a small set: a free text there would ask the hub)."""
    choices = {
        "--edits": NUMBER_TEXT, "--batch-size": NUMBER_TEXT, "--limit": NUMBER_TEXT,
        "--eval-sample": NUMBER_TEXT, "--seed": st.one_of(NUMBER_TEXT, LIST_TEXT),
        "--checkpoints": LIST_TEXT, "--capability-at": LIST_TEXT,
        "--capability-limit": NUMBER_TEXT, "--vllm-memory": NUMBER_TEXT,
        "--gen-max-tokens": NUMBER_TEXT, "--save-model": NUMBER_TEXT,
        "--methods": METHOD_TEXT, "--restart": METHOD_TEXT,
        "--capability": st.sampled_from(["", "sst2", "nosuch", "sst2,sst2", ","]),
        "--dtype": st.one_of(st.sampled_from(["float32", "bf16", ""]), TEXT),
        "--device": st.sampled_from(["cpu", "", "cuda:99", "nosuch", "cpu:0"]),
        "--split": st.sampled_from(["eval", "train", "", "test"]),
        "--protocol": st.one_of(st.sampled_from(["editbench", "", "nosuch"]), TEXT),
        "--prompt-format": st.sampled_from(["raw", "qa", "chat", "fewshot", "", "x"]),
        "--gen-rule": st.sampled_from(["editbench", "wild", "off", ""]),
        "--locality": st.sampled_from(["agree", "answers", "", "x"]),
        "--gen-eval": st.sampled_from(["on", "off", "", "yes", "maybe"]),
        "--param": st.one_of(st.sampled_from(
            ["ft-m.lr=nan", "ft-m.lr=0", "ft-m.lr=-1", "ft-m.steps=0", "pocket.n_entities=0",
             "ft-m.nosuch=1", "ft-m=1", ".=", "ft-m.lr=", "pocket.n_entities=10**9",
             "ft-m.layers=99"]), TEXT),
        "--editor": st.sampled_from(["ft-m=.", "rledit=", "=x", "x", "rledit=/nonexistent"]),
        "--model": st.sampled_from(["", " ", str(tmp / "missing"), str(store),
                                    str(store / "results.sqlite")]),
        "--task": st.sampled_from(["", "nosuch", "pocket", str(tmp / "missing.jsonl")]),
        "--data": st.sampled_from(["", str(tmp / "missing.jsonl"), str(store)]),
        "--out": st.sampled_from(["", " ", str(store), str(store / "results.sqlite"),
                                  str(store / "snapshots"), str(tmp / "new-out")]),
        "--cache-dir": st.sampled_from(["", str(store / "results.sqlite")]),
    }
    names = draw(st.lists(st.sampled_from(sorted(choices)), min_size=1, max_size=3, unique=True))
    args = []
    for name in names:
        args += [name, draw(choices[name])]
    return args


def test_run_dry_run_under_generated_options(tmp_path_factory, micro_gpt2, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    tmp = tmp_path_factory.mktemp("fuzz-run")
    store = build_store(tmp / "store")
    before = store_bytes(store)

    @given(run_options(tmp, store))
    def check(options):
        base = ["run", "--task", "pocket", "--param", "pocket.n_entities=20", "--model",
                micro_gpt2, "--methods", "ft-m", "--edits", "6", "--batch-size", "2",
                "--device", "cpu", "--out", tmp / "out"]
        holds(invoke(*base, *options, "--dry-run"), success="plan of run", test="run")
        assert store_bytes(store) == before

    check()
    report_tally("run")


@st.composite
def plan_options(draw) -> list[str]:
    choices = {
        "--edits": st.one_of(st.integers(-3, 300).map(str), st.sampled_from(["", "x", "1.5"])),
        "--batch-size": NUMBER_TEXT, "--eval-sample": NUMBER_TEXT,
        "--device-memory": NUMBER_TEXT, "--tflops": NUMBER_TEXT,
        "--tokens-per-record": NUMBER_TEXT, "--pairs-per-record": NUMBER_TEXT,
        "--train-records": NUMBER_TEXT, "--checkpoints": LIST_TEXT, "--methods": METHOD_TEXT,
        "--dtype": st.sampled_from(["bfloat16", "float32", "", "x"]),
        "--gen-eval": st.sampled_from(["on", "off", ""]),
    }
    names = draw(st.lists(st.sampled_from(sorted(choices)), min_size=1, max_size=3, unique=True))
    args = ["--edits", "50"]  # a plan at 20,000 edits builds a pocket world that large
    for name in names:
        args += [name, draw(choices[name])]
    return args


def test_plan_under_generated_options(micro_gpt2):
    @given(plan_options())
    def check(options):
        holds(invoke("plan", "--model", micro_gpt2, *options), success="GiB", test="plan")

    check()
    report_tally("plan")


def _bench_refuses(option: str, value: str) -> bool:
    """Whether ``bench`` must refuse the value before measuring anything (a valid one would
    measure for minutes, so the fuzz keeps to the values it refuses)."""
    try:
        if option == "--sizes":
            parts = [int(p) for p in value.split(",")]
            return not parts or min(parts) < 1
        if option == "--methods":
            return True
        least = {"--eval-sample": 2}.get(option, 1)
        return int(value) < least
    except ValueError:
        return True


def test_bench_refuses_before_measuring(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz-bench")

    @given(st.sampled_from(["--sizes", "--pairs", "--batch-size", "--eval-sample", "--gen-edits",
                            "--repeats", "--methods"]),
           st.one_of(NUMBER_TEXT, LIST_TEXT, METHOD_TEXT))
    def check(option, value):
        assume(_bench_refuses(option, value))
        if option == "--methods":  # a registered method would be measured
            assume(all(name.strip() not in TASKS_AND_METHODS for name in value.split(",")))
        result = invoke("bench", option, value, "--out", tmp / "bench")
        assert result.exit_code != 0
        holds(result, test="bench")
        assert not (tmp / "bench").exists()

    check()
    report_tally("bench")


def _registered() -> set[str]:
    from editbench.methods import METHODS

    return set(METHODS.names())


TASKS_AND_METHODS = _registered()


def test_report_and_samples_under_generated_options(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz-report")
    store = build_store(tmp / "store")
    theirs = tmp / "theirs.txt"
    theirs.write_text("mine\n")
    before, mine = store_bytes(store), theirs.read_bytes()
    paths = st.sampled_from(["-", "", str(store / "results.sqlite"), str(store), str(theirs),
                             str(tmp / "new" / "board.out"), str(store / "snapshots" / "b")])

    @given(st.sampled_from(["--md", "--csv", "--latex", "--html", "--seed"]), paths,
           NUMBER_TEXT)
    def report(option, path, seed):
        value = seed if option == "--seed" else path
        holds(invoke("report", store, option, value), test="report")
        assert store_bytes(store) == before and theirs.read_bytes() == mine

    @given(st.one_of(st.sampled_from(["strong", "weak"]), METHOD_TEXT),
           st.one_of(st.sampled_from(["10", "40"]), NUMBER_TEXT),
           st.sampled_from([None, "run-a", "", "x"]), st.booleans())
    def samples(method, edits, run_id, failed):
        args = ["samples", store, "--method", method, "--edits", edits]
        args += ["--run", run_id] if run_id is not None else []
        args += ["--failed"] if failed else []
        holds(invoke(*args), test="samples")
        assert store_bytes(store) == before

    report()
    samples()
    report_tally("report")
    report_tally("samples")


# -- records -------------------------------------------------------------------------------------
#: one valid record in each loader's published layout
LAYOUTS = {
    "jsonl": {"prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
              "target_new": "English", "paraphrases": ["Danielle Darrieux speaks"],
              "neighbours": [{"prompt": "Léon speaks", "answer": "French"}]},
    "zsre": {"subject": "X", "src": "What is X?", "rephrase": "X is what?", "alt": "a",
             "answers": ["b"], "loc": "nq question: q", "loc_ans": "c"},
    "counterfact": {"case_id": 1, "requested_rewrite": {
        "prompt": "{} lives in", "subject": "Ana", "relation_id": "P1",
        "target_new": {"str": "Rome", "id": "Q1"}, "target_true": {"str": "Oslo", "id": "Q2"}},
        "paraphrase_prompts": ["Ana has a house in"], "neighborhood_prompts": ["Bo lives in"],
        "attribute_prompts": ["Cy lives in"], "generation_prompts": ["Ana's home is"]},
    "knowedit": KNOWEDIT,
    "mquake": TWO_EDITS,
    "fever": {"input": "Claim: water is dry.", "alternatives": ["SUPPORTS"],
              "filtered_rephrases": ["Water: dry."], "prediction": "REFUTES"},
    "wikibigedit": WIKIBIGEDIT,
    "qaedit": QAEDIT,
    "ultraeditbench": ULTRAEDITBENCH,
    "uniedit": UNIEDIT,
}
#: layouts whose file is an object of records keyed by sample id, not a list
KEYED = {"uniedit"}

JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
    st.text(max_size=8), st.sampled_from(["", " ", "{}", "{} {}", "{0}", "{", "\ud800", "{x}"]))
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6)


def _paths(value, prefix=()):
    """Every place in a record: (path, container)."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


@st.composite
def damaged(draw, layout: dict) -> dict:
    """``layout`` with a few of its places replaced by generated values or removed."""
    record = json.loads(json.dumps(layout))
    for _ in range(draw(st.integers(0, 3))):
        paths = [p for p in _paths(record) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = record
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON_VALUE)
    return record


def _write(path: Path, records: list[dict], as_lines: bool, duplicate: bool,
           keyed: bool = False) -> None:
    if keyed:  # one JSON object of samples by id (a JSON Lines file is then not the layout)
        texts = [json.dumps(str(i)) + ": " + json.dumps(r, allow_nan=True)
                 for i, r in enumerate(records)]
        if duplicate and texts:
            texts.append(texts[0])  # a sample id given twice
        path.write_text("{" + ",\n".join(texts) + "}", encoding="utf-8")
        return
    texts = [json.dumps(r, allow_nan=True) for r in records]  # surrogates written as \\udXXX
    if duplicate and texts and texts[0].startswith("{"):  # a key given twice
        texts[0] = '{"k": 1, "k": 2' + (", " + texts[0][1:] if texts[0] != "{}" else "}")
    path.write_text("\n".join(texts) if as_lines else "[" + ",\n".join(texts) + "]",
                    encoding="utf-8")


def _valid(record: EditRecord) -> None:
    """What every reader of a loaded record relies on."""
    assert isinstance(record, EditRecord)
    for text in (record.prompt, record.subject, record.target_new):
        assert isinstance(text, str) and text.strip()
        text.encode("utf-8")
    dataset_hash([record])  # JSON without NaN and with encodable text


@pytest.mark.parametrize("task", sorted(LAYOUTS))
def test_every_loader_reads_a_record_or_names_what_is_wrong(task, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"fuzz-{task}")
    cls = TASKS[task]

    @given(st.lists(damaged(LAYOUTS[task]), min_size=1, max_size=3), st.booleans(),
           st.booleans())
    def check(records, as_lines, duplicate):
        path = tmp / ("data.jsonl" if as_lines else "data.json")
        _write(path, records, as_lines, duplicate, keyed=task in KEYED)
        loader = cls(TaskOptions(data=str(path)), cls.Config())
        try:
            loaded = loader.records()
        except Exception as exc:  # noqa: BLE001 (the property is about which errors come out)
            message = explain(exc)
            assert message is not None, f"unexplained {type(exc).__name__}: {exc}"
            assert isinstance(exc, ValueError), f"{type(exc).__name__}: {exc}"
            assert "\n" not in message and path.name in message, message
            tally(task, "one line")
            return
        for record in loaded:
            _valid(record)
        tally(task, "read")

    check()
    report_tally(task)


# -- damaged stores ------------------------------------------------------------------------------
NUMERIC = [(table, column) for table, columns in schema_columns().items()
           for column, kind in columns.items() if kind in ("INTEGER", "REAL")]


@st.composite
def damage(draw) -> tuple[str, object]:
    kind = draw(st.sampled_from(["drop table", "drop column", "text", "blob", "null json",
                                 "truncate", "garbage"]))
    tables = sorted(schema_columns())
    if kind == "drop table":
        return kind, draw(st.sampled_from(tables))
    if kind == "drop column":
        table = draw(st.sampled_from(tables))
        return kind, (table, draw(st.sampled_from(sorted(schema_columns()[table]))))
    if kind in ("text", "blob"):
        return kind, draw(st.sampled_from(NUMERIC))
    if kind == "null json":
        return kind, draw(st.sampled_from(["config", "versions", "baseline"]))
    return kind, draw(st.floats(0.0, 0.99))


def _damage(store: Path, kind: str, what) -> None:
    db = store / "results.sqlite"
    if kind in ("truncate", "garbage"):
        data = db.read_bytes()
        at = int(len(data) * what)
        db.write_bytes(data[:at] if kind == "truncate"
                       else data[:at] + b"\x00garbage\xff" * 8 + data[at + 80:])
        return
    conn = sqlite3.connect(db)
    try:
        if kind == "drop table":
            conn.execute(f"DROP TABLE {what}")
        elif kind == "drop column":
            conn.execute(f"ALTER TABLE {what[0]} DROP COLUMN {what[1]}")
        elif kind == "text":
            conn.execute(f"UPDATE {what[0]} SET {what[1]}='oops' WHERE rowid IN "
                         f"(SELECT rowid FROM {what[0]} LIMIT 1)"
                         if what[0] not in ("scores", "samples", "sample_prompts",
                                            "base_predictions", "base_generations",
                                            "snapshot_files")
                         else f"UPDATE {what[0]} SET {what[1]}='oops'")
        elif kind == "blob":
            conn.execute(f"UPDATE {what[0]} SET {what[1]}=x'00ff'")
        else:
            conn.execute(f"UPDATE runs SET {what}='[1, 2]'")
        conn.commit()
    except sqlite3.Error:
        assume(False)  # a primary-key column cannot be dropped, and so on: not a damage
    finally:
        conn.close()


def test_a_damaged_store_is_read_or_refused_and_left_as_it_is(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz-store")
    pristine = build_store(tmp / "pristine")

    @given(st.lists(damage(), min_size=1, max_size=2))
    def check(damages):
        store = tmp / "store"
        shutil.rmtree(store, ignore_errors=True)
        shutil.copytree(pristine, store)
        for kind, what in damages:
            _damage(store, kind, what)
        before = store_bytes(store)
        holds(invoke("report", store), success="\n", test="store (report)")  # the table
        holds(invoke("samples", store, "--method", "strong", "--edits", "10"),
              test="store (samples)")
        try:
            reader = load_results(store)
            try:
                frame = reader.summary()
                assert all(math.isfinite(v) or math.isnan(v)
                           for v in frame.select_dtypes("number").to_numpy().ravel())
            finally:
                reader.close()
        except Exception as exc:  # noqa: BLE001
            assert explain(exc) is not None, f"unexplained {type(exc).__name__}: {exc}"
        assert store_bytes(store) == before

    check()
    report_tally("store (report)")
    report_tally("store (samples)")
