"""Issue 31's silently wrong runs, tracebacks and unclear errors, one test per example: each
ends in one line naming the option, file, record or field (``error_line``: exit 1 or click's 2,
no traceback), and refused before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_faults_inputs import GOOD
from test_report import build_store

from editbench.harness.cli.group import main


def one_line(result) -> str:
    """The one ``Error:`` line of a refused command (a usage error exits 2, any other 1)."""
    assert result.exit_code in (1, 2), result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def invoke(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def dry_run(model: Path, tmp: Path, *extra) -> list:
    return ["run", "--task", "pocket", "--param", "pocket.n_entities=20", "--model", model,
            "--methods", "ft-m", "--edits", "4", "--batch-size", "2", "--device", "cpu",
            "--out", tmp / "out", *extra, "--dry-run"]


# -- silently wrong ------------------------------------------------------------------------------
@pytest.mark.parametrize("extra,message", [
    (("--methods", ""), "--methods '': an empty item"),
    (("--methods", ", ,"), "--methods ', ,': an empty item"),
    (("--model", ""), "--model needs a value"),
    (("--out", ""), "--out needs a path"),
    (("--checkpoints", ""), "--checkpoints ''"),
    (("--editor", "ft-m=."), "ft-m trains no editor"),
    (("--data", "edits.jsonl"), "the task pocket makes its own records"),
])
def test_an_empty_or_ignored_run_setting_is_refused(extra, message, tmp_path, micro_gpt2,
                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("edits.jsonl").write_text(json.dumps(GOOD))
    assert message in one_line(invoke(*dry_run(micro_gpt2, tmp_path, *extra)))


@pytest.mark.parametrize("args,option", [
    (("bench", "--pairs", "-1"), "--pairs"),
    (("bench", "--sizes", ""), "--sizes"),
    (("plan", "--edits", "0"), "--edits"),
    (("plan", "--batch-size", "0"), "--batch-size"),
    (("plan", "--tokens-per-record", "0"), "--tokens-per-record"),
    (("plan", "--device-memory", "-1"), "--device-memory"),
    (("plan", "--tflops", "0"), "--tflops"),
    (("plan", "--tflops", "nan"), "--tflops"),
    (("plan", "--methods", ", ,"), "--methods"),
    (("selfcheck", "--bench-sizes", "x"), "--bench-sizes"),
    (("--threads", "99999", "list"), "--threads"),
])
def test_bench_plan_and_selfcheck_refuse_what_makes_no_sense(args, option, micro_gpt2, tmp_path):
    if args[0] == "plan":
        args = (*args, "--model", micro_gpt2)
    if args[0] == "bench":
        args = (*args, "--out", tmp_path / "bench")
    assert option in one_line(invoke(*args))
    assert not (tmp_path / "bench").exists()  # refused before anything was measured


def test_a_newline_in_a_model_name_stays_inside_its_code_span(tmp_path):
    store = build_store(tmp_path / "runs", model="models/evil\n<script>x</script>`")
    result = invoke("report", store, "--md")
    assert result.exit_code == 0, result.output
    models = next(line for line in result.output.splitlines() if line.startswith("Models:"))
    assert "`models/evil <script>x</script>'`" in models


def test_duplicate_keys_are_refused_in_records_and_run_files(tmp_path, micro_gpt2):
    record = tmp_path / "edits.jsonl"
    record.write_text(json.dumps(GOOD) + '\n{"prompt": "a", "prompt": "b", "subject": "a", '
                      '"target_new": "c"}\n')
    line = one_line(invoke("run", "--task", record, "--model", micro_gpt2, "--methods", "ft-m",
                           "--out", tmp_path / "out", "--dry-run"))
    assert "edits.jsonl:2" in line and "'prompt' appears twice" in line
    for name, text in (("run.json", '{"edits": 4, "edits": 8}'),
                       ("run.yaml", "edits: 4\nedits: 8\n")):
        (tmp_path / name).write_text(text)
        line = one_line(invoke("run", "--config", tmp_path / name, "--dry-run"))
        assert name in line and "'edits' appears twice" in line
