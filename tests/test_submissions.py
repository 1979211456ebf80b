"""Submissions (``reports/submission.py``): ``editbench submit``, ``validate`` and ``publish`` from
a folder of submissions.

A submission is untrusted input: each test here changes one thing a careless or dishonest editor
could change (a score, a summary, the config, a field) and checks that ``validate`` refuses it with
one line naming the file and the field, and that ``publish`` builds nothing from it. The stores come
from ``tests/test_report.py``'s ``build_store`` (no model runs), whose method names and texts try to
inject markup; one test runs a micro model end to end.
"""

from __future__ import annotations

import copy
import gzip
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_report import EVIL, build_store

from editbench.core.records import Metric, PhaseTime, ScoreRow
from editbench.core.store import ResultsStore, load_results
from editbench.harness.cli.group import main
from editbench.reports.collect import collect
from editbench.reports.leaderboard import board_to_dict, build_boards
from editbench.reports.submission import (
    DEFAULT_FOLDER,
    SubmissionError,
    content_hash,
    dump,
    load,
    problems,
    read,
    run_id_of,
    scores_hash,
    summaries,
)


def build_run_store(folder: Path, **kwargs) -> Path:
    """``build_store`` under the run id the runner would give its config (the config's hash)."""
    scratch = build_store(folder.with_name(folder.name + "-scratch"), **kwargs)
    with load_results(scratch) as store:
        config = store.runs()["config"][0]
    return build_store(folder, run_id=run_id_of(config), **kwargs)


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    return build_run_store(tmp_path_factory.mktemp("submit") / "results")


@pytest.fixture(scope="module")
def submitted(store_dir, tmp_path_factory) -> Path:
    """The submission file of the store's run, written by ``editbench submit``."""
    into = tmp_path_factory.mktemp("submissions")
    result = invoke("submit", store_dir, "--into", into)
    assert result.exit_code == 0, result.output
    (path,) = into.iterdir()
    assert str(path) in result.output
    return path


def rewrite(source: Path, folder: Path, change) -> Path:
    """A copy of the submission with ``change(doc)`` applied (the hashes left as they were)."""
    doc = read(source)
    change(doc)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / source.name
    path.write_text(dump(doc), encoding="utf-8")
    return path


def refusal(path: Path) -> list[str]:
    """``editbench validate``'s problem lines for ``path``, after checking it exits non-zero."""
    result = invoke("validate", path)
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(str(path))]
    assert lines, result.output
    return lines


def _first_cell(doc: dict, metric: str = "efficacy_acc") -> list:
    return next(c for c in doc["scores"]["cells"] if metric in c["values"])["values"][metric]


def test_submit_writes_a_compact_self_describing_file_that_validates(store_dir, submitted):
    doc = read(submitted)
    assert doc["format"] == "editbench-submission" and doc["schema"] == 1
    run = doc["run"]
    assert run["task"] == "pocket" and run["n_edits"] == 40 and run["dataset_hash"] == "d5"
    assert run["run_id"] == run_id_of(run["config"])
    assert doc["code"]["git_sha"] == "abc123" and doc["hardware"]["device"] == "cpu (test)"
    assert doc["protocol"]["name"] == "editbench"
    assert {m["method"] for m in doc["methods"]} == {"strong", "weak", EVIL, "boom", "crash"}
    # no answers and nothing of the snapshots: a submission is scores and their provenance
    assert "samples" not in doc and "snapshot" not in submitted.read_text()
    with load_results(store_dir) as store:
        stored = store.scores()
    assert sum(len(v) for c in doc["scores"]["cells"] for v in c["values"].values()) == len(stored)
    assert submitted.stat().st_size < (store_dir / "results.sqlite").stat().st_size
    result = invoke("validate", submitted)
    assert result.exit_code == 0, result.output
    assert f"{submitted}: valid" in result.output


def test_a_submission_reads_into_the_boards_its_store_gives(store_dir, submitted):
    from_store = [board_to_dict(b) for b in build_boards(collect([store_dir]))]
    from_submission = [board_to_dict(b) for b in build_boards(collect([submitted]))]
    assert from_submission == from_store
    # a folder of submissions reads the same; the same run in a store beside it is read once
    assert [board_to_dict(b) for b in build_boards(collect([submitted.parent]))] == from_store
    both = collect([submitted.parent, store_dir])
    assert len(both.runs) == 1 and both.runs["source"][0] == str(submitted)


def test_a_metric_scored_on_some_edits_only_round_trips(tmp_path):
    """Edits without a metric (a record with no portability question) have no row in the store:
    the submission writes null there, and reads back no row, not a NaN."""
    config = {"edits": 6, "batch_size": 3, "checkpoints": [6], "seed": 0}
    run_id = run_id_of(config)
    with ResultsStore(tmp_path / "store") as store:
        store.ensure_run(run_id, task="t", model="m", config=config, versions={}, device="cpu",
                         seed=0, git_sha=None, dataset_hash="d", n_edits=6)
        store.save_run_outline(run_id, [Metric("efficacy_acc", "e"),
                                        Metric("portability_acc", "p")], [(0, 3), (3, 6)])
        store.start_cell(run_id, "ft", {}, "h")
        store.commit_checkpoint(run_id, "ft", 6, [
            *(ScoreRow(p, f"u{p}", "efficacy_acc", float(p % 2)) for p in range(6)),
            *(ScoreRow(p, f"u{p}", "portability_acc", 0.5) for p in (0, 3))],
            [PhaseTime("edit", 0, 0.1), PhaseTime("edit", 1, 0.1)], 2**20)
        store.finish_cell(run_id, "ft", "done")
    result = invoke("submit", tmp_path / "store", "--into", tmp_path / "out")
    assert result.exit_code == 0, result.output
    (path,) = (tmp_path / "out").iterdir()
    doc = read(path)
    assert _first_cell(doc, "portability_acc").count(None) == 4
    assert {(s["metric"], s["n"]) for s in doc["summaries"]} == {("efficacy_acc", 6),
                                                                  ("portability_acc", 2)}
    assert len(collect([path]).scores) == len(collect([tmp_path / "store"]).scores) == 8
    assert ([board_to_dict(b) for b in build_boards(collect([path]))]
            == [board_to_dict(b) for b in build_boards(collect([tmp_path / "store"]))])


def test_a_changed_score_is_refused(submitted, tmp_path):
    def flip(doc):
        values = _first_cell(doc)
        values[0] = 1 - values[0]

    lines = refusal(rewrite(submitted, tmp_path, flip))
    fields = [line.split(": ")[1] for line in lines]
    assert "hashes.scores_sha256" in fields and "hashes.content_sha256" in fields
    assert any(f.startswith("summaries (") and "efficacy_acc" in f for f in fields)
    assert all(line.count("\n") == 0 for line in lines)


def test_a_changed_score_with_recomputed_hashes_is_still_caught_by_its_summary(submitted,
                                                                                tmp_path):
    """Hashes are no signature; the stored summaries must agree with the scores as well."""
    def forge(doc):
        values = _first_cell(doc)
        values[0] = 1 - values[0]
        doc["hashes"]["scores_sha256"] = scores_hash(doc)
        doc["hashes"]["content_sha256"] = content_hash(doc)

    (line,) = refusal(rewrite(submitted, tmp_path, forge))
    assert ": summaries (" in line and "the per-edit scores give" in line


def test_a_summary_that_disagrees_with_its_scores_is_refused(submitted, tmp_path):
    def inflate(doc):
        doc["summaries"][0]["mean"] = min(1.0, doc["summaries"][0]["mean"] + 0.25)
        doc["hashes"]["content_sha256"] = content_hash(doc)

    (line,) = refusal(rewrite(submitted, tmp_path, inflate))
    assert ": summaries (" in line


def test_a_changed_config_no_longer_matches_its_run_id(submitted, tmp_path):
    def relabel(doc):
        doc["run"]["config"]["batch_size"] = 1
        doc["protocol"] = copy.deepcopy(doc["protocol"])
        doc["hashes"]["content_sha256"] = content_hash(doc)

    (line,) = refusal(rewrite(submitted, tmp_path, relabel))
    assert ": run.run_id: is not the hash of the run's config" in line


@pytest.mark.parametrize(("change", "field", "says"), [
    (lambda d: d["run"].pop("dataset_hash"), "run.dataset_hash", "missing"),
    (lambda d: d["methods"][1].pop("status"), "methods[1].status", "missing"),
    (lambda d: d["run"].update(seed="0"), "run.seed", "must be an integer"),
    (lambda d: d["checkpoints"][0].update(edit_seconds=True), "checkpoints[0].edit_seconds",
     "must be a number"),
    (lambda d: d["timings"][0].pop(), "timings[0]", "must be [method, phase, step, seconds]"),
    (lambda d: d["methods"][0].update(status="running"), "methods[0].status", "finish the run"),
], ids=["run", "method", "type", "bool-as-number", "timing-row", "unfinished"])
def test_a_missing_or_malformed_field_is_refused_by_name(submitted, tmp_path, change, field,
                                                         says):
    path = rewrite(submitted, tmp_path, change)
    lines = refusal(path)
    assert any(line.startswith(f"{path}: {field}: ") and says in line for line in lines), lines
    with pytest.raises(SubmissionError, match=re.escape(field)):
        load(path)


def test_other_files_are_refused_in_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "editbench-submission", "schema": 1,')
    (line,) = refusal(bad)
    assert "not JSON (line 1" in line
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something else"}))
    (line,) = refusal(other)
    assert f"{other}: format: " in line
    nan = tmp_path / "nan.json"
    nan.write_text('{"format": "editbench-submission", "schema": 1, "x": NaN}')
    (line,) = refusal(nan)
    assert "holds NaN, which is not JSON" in line
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"format": "editbench-submission", "schema": 99}))
    (line,) = refusal(newer)
    assert "schema: is 99" in line


def test_an_invalid_submission_stops_publish_and_fails_the_workflows_step(submitted, tmp_path):
    """The leaderboard workflow runs ``editbench validate leaderboard/submissions``: a pull
    request that adds a tampered file fails there with the validator's line."""
    folder = tmp_path / DEFAULT_FOLDER
    good = rewrite(submitted, folder, lambda doc: None)
    assert invoke("validate", folder).exit_code == 0
    (good.parent / "README.md").write_text("how to submit")  # not a submission: ignored
    tampered = rewrite(good, tmp_path / "elsewhere", lambda doc: _first_cell(doc).reverse())
    target = folder / ("tampered-" + good.name)
    target.write_bytes(tampered.read_bytes())
    result = invoke("validate", folder)
    assert result.exit_code != 0 and f"{target}: hashes.scores_sha256" in result.output
    assert f"{good}: valid" in result.output
    site = invoke("publish", folder, "--site", tmp_path / "site")
    assert site.exit_code != 0 and str(target) in site.output
    assert not (tmp_path / "site" / "index.html").exists()


def test_validate_flags_two_files_of_one_run(submitted, tmp_path):
    copy_ = tmp_path / ("copy-" + submitted.name)
    copy_.write_bytes(submitted.read_bytes())
    result = invoke("validate", submitted, copy_)
    assert result.exit_code != 0
    assert f"{copy_}: run.run_id: run " in result.output and "keep one" in result.output


def test_a_compressed_submission_reads_the_same(store_dir, submitted, tmp_path):
    result = invoke("submit", store_dir, "--into", tmp_path, "--gzip")
    assert result.exit_code == 0, result.output
    (path,) = tmp_path.glob("*.json.gz")
    doc, plain = read(path), read(submitted)
    assert doc["hashes"]["scores_sha256"] == plain["hashes"]["scores_sha256"]
    assert len(gzip.decompress(path.read_bytes())) > 3 * path.stat().st_size
    assert invoke("validate", path).exit_code == 0


def test_submit_never_overwrites_and_refuses_an_unfinished_run(store_dir, submitted, tmp_path):
    before = submitted.read_bytes()
    again = invoke("submit", store_dir, "--into", submitted.parent)
    assert again.exit_code != 0 and "exists" in again.output
    assert submitted.read_bytes() == before
    with ResultsStore(tmp_path / "running") as store:
        store.ensure_run("r", task="pocket", model="m", config={}, versions={}, device="cpu",
                         seed=0, git_sha=None, dataset_hash="d", n_edits=10)
        store.start_cell("r", "ft-m", {}, "h")
    result = invoke("submit", tmp_path / "running", "--into", tmp_path / "out")
    assert result.exit_code != 0 and "ft-m has not finished" in result.output
    assert not (tmp_path / "out").exists()
    missing = invoke("submit", store_dir, "--run", "nope", "--into", tmp_path / "out")
    assert missing.exit_code != 0 and "no run nope" in missing.output


@pytest.fixture(scope="module")
def micro_submission(tmp_path_factory, micro_gpt2) -> Path:
    """A micro model's run of ``ft-m`` on 6 edits, submitted."""
    tmp = tmp_path_factory.mktemp("micro")
    path = tmp / "mine.jsonl"
    path.write_text("\n".join(json.dumps({
        "prompt": f"Fact: Kalo Mirve{i} lives in", "subject": f"Kalo Mirve{i}",
        "target_new": "Fengal Vale", "paraphrases": [f"Kalo Mirve{i} has a house in"],
        "neighbours": [{"prompt": "Wensel Quitho lives in", "answer": "Brajar Port"}]})
        for i in range(6)))
    ran = invoke("run", "--task", path, "--model", micro_gpt2, "--methods", "ft-m",
                 "--batch-size", "3", "--out", tmp / "out", "--device", "cpu")
    assert ran.exit_code == 0, ran.output
    submitted = invoke("submit", tmp / "out", "--into", tmp / "submissions")
    assert submitted.exit_code == 0, submitted.output
    (file,) = (tmp / "submissions").iterdir()
    return file


@pytest.fixture(scope="module")
def site(submitted, micro_submission, tmp_path_factory) -> Path:
    """``editbench publish`` of a submissions folder holding both runs (one site: building one
    takes seconds of plotting)."""
    folder = tmp_path_factory.mktemp("leaderboard") / "submissions"
    folder.mkdir()
    for path in (submitted, micro_submission):
        (folder / path.name).write_bytes(path.read_bytes())
    validated = invoke("validate", folder)
    assert validated.exit_code == 0 and "2 submissions valid" in validated.output
    out = folder.parent / "site"
    result = invoke("publish", folder, "--site", out)
    assert result.exit_code == 0, result.output
    return out


def test_the_site_shows_each_submission_with_its_provenance_escaped(submitted, site):
    doc = read(submitted)
    run_id = doc["run"]["run_id"]
    index = (site / "index.html").read_text()
    # every row of the board links to its run's provenance
    assert f'runs/{run_id}.html#provenance' in index
    page = (site / "runs" / f"{run_id}.html").read_text()
    provenance = page[page.index('id="provenance"'):page.index("</section>",
                                                               page.index('id="provenance"'))]
    for shown in (doc["code"]["git_sha"], doc["run"]["dataset_hash"], "cpu (test)",
                  doc["hashes"]["scores_sha256"], doc["hashes"]["content_sha256"],
                  f'href="../submissions/{submitted.name}"'):
        assert shown in provenance, shown
    assert (site / "submissions" / submitted.name).read_bytes() == submitted.read_bytes()
    published = json.loads((site / "leaderboard.json").read_text())
    (entry,) = [r for r in published["runs"] if r["run_id"] == run_id]
    assert entry["submission"]["content_sha256"] == doc["hashes"]["content_sha256"]
    assert entry["submission"]["file"] == f"submissions/{submitted.name}"
    # untrusted strings (a method named with </script>, an error, a config note) stay text
    for html in site.rglob("*.html"):
        text = html.read_text()
        assert "<script>window.__pwned" not in text, html
        assert "</script><script>" not in text, html
    assert "&lt;/script&gt;" in page


def test_a_micro_model_run_goes_through_submit_validate_and_publish(micro_submission, site,
                                                                    micro_gpt2):
    doc = read(micro_submission)
    assert problems(doc) == []
    # the runner's record: versions, the sessions' numerics, the protocol, the model's path
    assert doc["code"]["versions"]["editbench"] == doc["code"]["editbench"]
    assert doc["hardware"]["sessions"] and doc["run"]["config"]["protocol"] == doc["protocol"]
    assert doc["run"]["model"] == str(micro_gpt2)
    assert {s["method"] for s in summaries(doc)} == {"ft-m"}
    run_id = doc["run"]["run_id"]
    page = (site / "runs" / f"{run_id}.html").read_text()
    assert doc["code"]["versions"]["torch"] in page and micro_submission.name in page
    index = (site / "index.html").read_text()
    assert f"runs/{run_id}.html#provenance" in index and ">ft-m</a>" in index
    # the two runs are on different tasks: two boards, each from its submission
    board_tasks = {b["task"] for b in json.loads((site / "leaderboard.json").read_text())["boards"]}
    assert board_tasks == {"pocket", doc["run"]["task"]}
