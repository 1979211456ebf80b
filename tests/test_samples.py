"""The edited models' answers: stored compactly at every checkpoint, read back whole, printed by
``editbench samples`` beside the target, the unedited answer and both verdicts, and an older store
without them still opens, reports and says it has none."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from conftest import SMALL_POCKET_WORLD

from editbench.core.records import PhaseTime, SamplePrompt, SampleRow, ScoreRow
from editbench.core.store import SCHEMA_VERSION, ResultsStore, load_results
from editbench.harness.cli.group import main
from editbench.reports.collect import collect
from editbench.reports.samples import shown
from editbench.reports.site import write_pages

EVIL = "</script><b>bold</b>\x1b[31m"


def _fill(store: ResultsStore, run_id: str = "r1") -> None:
    store.ensure_run(run_id, task="pocket", model="m", config={}, versions={}, device="cpu",
                     seed=0, git_sha=None, dataset_hash="d", n_edits=2)
    store.save_sample_prompts(run_id, [
        SamplePrompt(0, "u0", "edit", 0, "Ann lives in", "Rome", " Paris."),
        SamplePrompt(0, "u0", "paraphrase", 0, "Ann's home is", "Rome", " Paris."),
        SamplePrompt(0, "u0", "neighbour", 0, "Bob lives in", "Oslo", " Oslo."),
        SamplePrompt(1, "u1", "edit", 0, "Cid speaks", "Dutch", " Welsh."),
    ])
    store.start_cell(run_id, "ft-m", {}, "h")
    for n_edits, answers in ((1, [SampleRow(0, "edit", 0, " Rome.", True, True),
                                  SampleRow(0, "paraphrase", 0, " Paris.", False, True),
                                  SampleRow(0, "neighbour", 0, " Oslo.", True, True)]),
                             (2, [SampleRow(0, "edit", 0, " Rome.", True, True),
                                  SampleRow(0, "paraphrase", 0, EVIL, False, False),
                                  SampleRow(0, "neighbour", 0, " Rome.", False, False),
                                  SampleRow(1, "edit", 0, " Welsh.", False, True)])):
        store.commit_checkpoint(run_id, "ft-m", n_edits,
                                [ScoreRow(0, "u0", "efficacy_acc", 1.0)],
                                [PhaseTime("edit", n_edits - 1, 0.1)], 2**20, samples=answers)


def test_answers_round_trip_and_an_unchanged_answer_costs_no_text(tmp_path):
    with ResultsStore(tmp_path) as store:
        _fill(store)
        stored = dict(((p, k), t) for p, k, t in store.conn.execute(
            "SELECT position, kind, text FROM samples WHERE n_edits=1"))
    # the paraphrase and the neighbour answered as the unedited model did: no text stored
    assert stored == {(0, 0): " Rome.", (0, 1): None, (0, 2): None}
    store = load_results(tmp_path)
    frame = store.samples(method="ft-m", n_edits=2)
    assert list(frame["kind"]) == ["edit", "paraphrase", "neighbour", "edit"]
    assert list(frame["text"]) == [" Rome.", EVIL, " Rome.", " Welsh."]
    assert list(frame["unedited"]) == [" Paris.", " Paris.", " Oslo.", " Welsh."]
    assert list(frame["target"]) == ["Rome", "Rome", "Oslo", "Dutch"]
    assert list(frame["generated_pass"]) == [True, False, False, False]
    assert list(frame["teacher_forced_pass"]) == [True, False, False, True]
    assert list(frame["uid"]) == ["u0", "u0", "u0", "u1"]
    assert list(store.samples(n_edits=1)["text"]) == [" Rome.", " Paris.", " Oslo."]
    assert store.sample_checkpoints()[["n_edits", "samples"]].values.tolist() == [[1, 3], [2, 4]]
    store.close()
    with ResultsStore(tmp_path) as store:  # --restart drops a method's answers too
        store.drop_cell("r1", "ft-m")
        assert store.samples().empty


def test_an_answer_without_its_stored_prompt_is_refused(tmp_path):
    with ResultsStore(tmp_path) as store:
        _fill(store)
        with pytest.raises(ValueError, match="edit 5's edit prompt 0 has no stored prompt"):
            store.commit_checkpoint("r1", "ft-m", 3, [], [], 0,
                                    samples=[SampleRow(5, "edit", 0, "x", True, True)])
        assert store.cell("r1", "ft-m").last_checkpoint == 2  # nothing of it written


def _as_schema_2(folder) -> None:
    """Make ``folder``'s store what an editbench before answers wrote."""
    with ResultsStore(folder) as store:
        store.conn.execute("DROP TABLE samples")
        store.conn.execute("DROP TABLE sample_prompts")
        store.conn.execute("UPDATE meta SET value='2' WHERE key='schema_version'")


def test_a_store_from_before_answers_reports_and_is_migrated_when_written(tmp_path):
    store_dir, html = tmp_path / "old", tmp_path / "html"
    with ResultsStore(store_dir) as store:
        _fill(store)
    _as_schema_2(store_dir)
    old = load_results(store_dir)
    assert old.version == 2 and old.samples().empty and old.sample_checkpoints().empty
    old.close()
    write_pages(collect([store_dir]), html, site=False)
    assert 'id="answers"' not in next((html / "runs").glob("*.html")).read_text()
    result = CliRunner().invoke(main, ["samples", str(store_dir), "--method", "ft-m",
                                       "--edits", "2"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "holds no stored answers" in result.output
    with ResultsStore(store_dir) as store:  # a writer migrates it; its new checkpoints get answers
        assert store.version == SCHEMA_VERSION and store.samples().empty
        store.save_sample_prompts("r1", [SamplePrompt(0, "u0", "edit", 0, "p", "t", "u")])
        store.commit_checkpoint("r1", "ft-m", 3, [], [], 0,
                                samples=[SampleRow(0, "edit", 0, "t", True, True)])
        assert list(store.samples()["n_edits"]) == [3]


def test_the_command_names_the_option_at_fault(tmp_path):
    with ResultsStore(tmp_path) as store:
        _fill(store)

    def run(*args: str) -> str:
        result = CliRunner().invoke(main, ["samples", str(tmp_path), *args])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        return result.output

    assert "--method rome: " in run("--method", "rome", "--edits", "1")
    assert "methods with answers: ft-m" in run("--method", "rome", "--edits", "1")
    assert "its checkpoints: 1, 2" in run("--method", "ft-m", "--edits", "7")
    assert "--run r9: " in run("--method", "ft-m", "--edits", "1", "--run", "r9")


def _verdicts(line: str) -> tuple[str, str]:
    """A printed answer's (gen, tf)."""
    found = re.search(r"\s(pass|FAIL)\s+(pass|FAIL)\s", line)
    assert found, line
    return found.group(1), found.group(2)


def test_the_command_prints_answers_beside_target_unedited_and_verdicts(tmp_path):
    with ResultsStore(tmp_path) as store:
        _fill(store)
    result = CliRunner().invoke(main, ["samples", str(tmp_path), "--method", "ft-m",
                                       "--edits", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "ft-m at 2 edits, run r1: 4 answers at 2 edits"
    assert lines[1].split() == ["edit", "uid", "kind", "gen", "tf", "answer", "target",
                                "unedited", "prompt"]
    assert lines[2].split() == ["0", "u0", "edit", "pass", "pass", "Rome.", "Rome", "Paris.",
                                "Ann", "lives", "in"]
    assert "\x1b" not in result.output and shown(EVIL) in lines[3]  # escaped for the terminal
    assert "token accuracy 1.0" in result.output  # the verdicts' rules
    failed = CliRunner().invoke(main, ["samples", str(tmp_path), "--method", "ft-m",
                                       "--edits", "2", "--failed"])
    assert failed.exit_code == 0, failed.output
    rows = failed.output.splitlines()[2:5]
    assert [(r.split()[2], _verdicts(r)[0]) for r in rows] == [
        ("paraphrase", "FAIL"), ("neighbour", "FAIL"), ("edit", "FAIL")]


def test_shown_escapes_control_characters():
    assert shown(" a\x1b[31mb\n ") == "a\\x1b[31mb"
    assert shown("  ") == "(nothing)"


WORLD = {k: str(v) for k, v in SMALL_POCKET_WORLD.items()}


def test_a_run_stores_every_scored_answer_with_verdicts_that_match_its_scores(small_pocket,
                                                                                tmp_path):
    from editbench.harness.plan.resolve import resolve
    from editbench.harness.plan.settings import RunSpec
    from editbench.harness.running.runner import Runner

    spec = RunSpec(methods=("ft-m",), model=str(small_pocket[3]), edits=8, batch_size=4,
                   checkpoints=(4, 8), out=tmp_path / "out", device="cpu", cache_dir=tmp_path,
                   params={"pocket": WORLD, "ft-m": {"lr": "1e-2"}})
    runner = Runner(resolve(spec))
    assert runner.run().ok
    store = load_results(spec.out)
    answers = store.samples()
    wide = store.per_edit().set_index(["n_edits", "position"])
    for n_edits in (4, 8):
        at = answers[answers["n_edits"] == n_edits]
        records = [runner.records[p] for p in range(n_edits)]
        assert len(at) == sum(1 + len(r.paraphrases) + len(r.neighbours) + len(r.portability)
                              for r in records)
        for edit in at[at["kind"] == "edit"].itertuples():
            scores = wide.loc[(n_edits, edit.position)]
            assert edit.generated_pass == (scores["efficacy_gen_em"] == 1.0)
            assert edit.teacher_forced_pass == (scores["efficacy_acc"] == 1.0)
            assert edit.target == runner.records[edit.position].target_new
        neighbours = at[at["kind"] == "neighbour"].groupby("position")["generated_pass"].mean()
        assert neighbours.to_dict() == pytest.approx(
            wide.loc[n_edits]["specificity_gen_agree"].to_dict())
    # the unedited model's answers at neighbourhood prompts are the generated specificity's
    base = store.load_base_generations(runner.run_id)
    assert all(base[p] == u for p, u in zip(answers["prompt"], answers["unedited"])
               if p in base)
    result = CliRunner().invoke(main, ["samples", str(spec.out), "--method", "ft-m",
                                       "--edits", "8", "--failed"])
    assert result.exit_code == 0, result.output
    gen = [_verdicts(line)[0] for line in result.output.splitlines()[2:] if line[:1].isdigit()]
    assert set(gen) <= {"FAIL"} and len(gen) == (~answers[answers["n_edits"] == 8]
                                                 ["generated_pass"]).sum()
