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


# -- tracebacks ----------------------------------------------------------------------------------
def _copy_model(source: Path, target: Path) -> Path:
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


@pytest.mark.parametrize("damage,message", [
    ("config", "its config.json disagrees with its weights"),
    ("truncated", "a weights file is damaged or truncated"),
])
def test_a_model_that_disagrees_or_is_truncated_is_one_line(damage, message, tmp_path,
                                                             micro_gpt2):
    model = _copy_model(micro_gpt2, tmp_path / "model")
    if damage == "config":
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "n_embd": 64}))
    else:
        weights = (model / "model.safetensors").read_bytes()
        (model / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    args = [a for a in dry_run(model, tmp_path) if a != "--dry-run"]
    assert message in one_line(invoke(*args))


@pytest.mark.parametrize("extra,message", [
    (("--seed", "99999999999999999999"), "--seed: 99999999999999999999 is too large"),
    (("--seed", "-1"), "a seed is at least 0"),
    (("--edits", str(2**70)), "--edits: "),
])
def test_a_huge_number_is_one_line(extra, message, tmp_path, micro_gpt2):
    assert message in one_line(invoke(*dry_run(micro_gpt2, tmp_path, *extra)))


def test_a_run_file_with_out_null_is_one_line(tmp_path):
    (tmp_path / "run.yaml").write_text("out: null\n")
    assert "--out needs a value" in one_line(invoke("run", "--config", tmp_path / "run.yaml",
                                                    "--dry-run"))


def _records(tmp: Path, name: str, *lines: str) -> Path:
    path = tmp / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("task,line,message", [
    ("jsonl", '{"prompt": "\\ud800 lives in", "subject": "x", "target_new": "y"}',
     "field 'prompt' holds a lone surrogate"),
    ("jsonl", '{"prompt": "A lives in", "subject": "A", "target_new": "y", '
              '"extra": {"score": NaN}}', "NaN is not a JSON number"),
    ("zsre", '{"src": "Where is A?", "subject": "A", "alt": "B", "answers": [], '
             '"rephrase": "A?", "loc": "nq question: who", "loc_ans": "x"}',
     "field 'answers': must hold at least one string"),
    ("counterfact", '{"case_id": 1, "requested_rewrite": {"prompt": "{} and {} live in", '
                    '"subject": "A", "target_new": {"str": "B"}, "target_true": {"str": "C"}}, '
                    '"paraphrase_prompts": ["x"], "neighborhood_prompts": ["y"]}',
     "field 'requested_rewrite.prompt': must hold exactly one '{}'"),
])
def test_a_malformed_record_is_one_line_naming_file_line_and_field(task, line, message, tmp_path,
                                                                    micro_gpt2):
    data = _records(tmp_path, "data.jsonl", line)
    params = ("--param", "zsre.target=answers") if task == "zsre" else ()
    result = invoke("run", "--task", task, "--data", data, *params, "--model", micro_gpt2,
                    "--methods", "ft-m", "--out", tmp_path / "out", "--dry-run")
    error = one_line(result)
    assert "data.jsonl:1" in error and message in error


def test_a_full_disk_while_a_snapshot_is_written_is_an_os_error_naming_the_file(tmp_path):
    import errno
    import resource

    import torch

    from editbench.core.snapshot import save_snapshot
    from editbench.harness.cli.group import explain

    model = torch.nn.Linear(400, 400)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))  # the weights need 640 KB
    try:
        with pytest.raises(OSError) as caught:
            save_snapshot(tmp_path, 4, model, ["weight"], {}, torch.Generator())
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert caught.value.errno in (errno.EFBIG, errno.ENOSPC)
    assert "weights.safetensors" in caught.value.filename
    assert "no space left writing" in explain(caught.value)


def test_a_check_inside_a_method_is_one_line_without_a_traceback(tmp_path, micro_gpt2, caplog):
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "x").write_text("not an editor")
    args = [a for a in dry_run(micro_gpt2, tmp_path, "--methods", "rledit", "--editor",
                               f"rledit={garbage}") if a != "--dry-run"]
    result = invoke(*args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"rledit: failed: {garbage} holds no trained editor" in result.output
    logged = [r for r in caplog.records if "rledit failed" in r.getMessage()]
    assert logged and not any(r.exc_info for r in logged)  # logged in one line


# -- unclear -------------------------------------------------------------------------------------
def test_capability_at_beyond_the_edits_names_itself(tmp_path, micro_gpt2):
    line = one_line(invoke(*dry_run(micro_gpt2, tmp_path, "--capability", "sst2",
                                    "--capability-at", "999")))
    assert "--capability-at '999': 999 is beyond --edits 4" in line


def test_a_prompt_longer_than_the_context_is_refused_before_the_run(tmp_path, micro_gpt2):
    data = _records(tmp_path, "long.jsonl", json.dumps(GOOD), json.dumps(
        {**GOOD, "uid": "huge", "prompt": "Danielle Darrieux " + "lives in " * 400_000}))
    line = one_line(invoke("run", "--task", data, "--model", micro_gpt2, "--methods", "ft-m",
                           "--out", tmp_path / "out", "--dry-run"))
    assert "record huge: field 'prompt'" in line and "beyond the context" in line
    assert "(512 tokens)" in line


def test_a_record_whose_extra_holds_an_object_hashes_like_any_other(tmp_path):
    """Found by the fuzzing suite: CounterFact keeps ``relation_id`` in ``extra`` as read, and an
    object there broke the dataset hash (dataclasses.asdict could not copy the loader's dict)."""
    from editbench.core.records import dataset_hash
    from editbench.core.task import TaskOptions
    from editbench.tasks import TASKS

    record = {"case_id": 1, "requested_rewrite": {
        "prompt": "{} lives in", "subject": "Ana", "relation_id": {"id": "P1"},
        "target_new": {"str": "Rome"}, "target_true": {"str": "Oslo"}},
        "paraphrase_prompts": ["Ana has a house in"], "neighborhood_prompts": ["Bo lives in"]}
    data = tmp_path / "cf.json"
    data.write_text(json.dumps([record]))
    loaded = TASKS["counterfact"](TaskOptions(data=str(data))).records()
    assert len(dataset_hash(loaded)) == 16
