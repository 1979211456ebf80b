"""The Python API (``editbench.run``, ``editbench.edit``), ``--save-model`` and the run's table,
on a micro model."""

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import micro_edits, write_edits

import editbench
from editbench.harness.cli.group import main

EDITS = micro_edits(6)


@pytest.fixture(scope="module")
def edits_file(tmp_path_factory):
    return write_edits(tmp_path_factory.mktemp("edits") / "mine.jsonl", 6)


@pytest.fixture(scope="module")
def api_run(tmp_path_factory, edits_file, micro_gpt2):
    """One run through the API: ft-m on the micro model, its model saved after 3 edits."""
    out = tmp_path_factory.mktemp("api-run")
    store = editbench.run(
        {"task": str(edits_file), "methods": ["ft-m"], "batch_size": 3, "device": "cpu",
         "checkpoints": [3, 6]},
        model=str(micro_gpt2), out=out, save_model=3, gen_eval=False
    )
    with store:
        return out, store.summary(), store.scores(), store.runs()


def test_the_api_runs_a_benchmark_and_returns_its_store(api_run):
    out, summary, _, runs = api_run
    assert list(summary["method"]) == ["ft-m", "ft-m"] and list(summary["n_edits"]) == [3, 6]
    assert summary["efficacy_acc"].between(0, 1).all()
    assert len(runs) == 1 and runs["task"].iloc[0] == "jsonl"


def test_the_run_keeps_its_resolved_file_which_repeats_it(api_run, micro_gpt2):
    out, *_ = api_run
    (stored,) = (out / "run-files").iterdir()
    data = yaml.safe_load(stored.read_text())
    assert (
        data["methods"] == ["ft-m"]
        and data["save_model"] == 3
        and data["model"] == str(micro_gpt2)
    )
    assert data["out"] == str(out) and data["gen_eval"] is False
    again = CliRunner().invoke(main, ["run", "--config", str(stored), "--dump-config"])
    assert yaml.safe_load(again.output) == data


def test_the_saved_model_reloads_and_scores_as_the_live_one_did(api_run, micro_gpt2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editbench.core.probe import HFProbe
    from editbench.core.records import ScoringPair

    out, _, scores, runs = api_run
    folder = out / "models" / runs["run_id"].iloc[0] / "ft-m" / "edits-3"
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    base = AutoModelForCausalLM.from_pretrained(micro_gpt2)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), base.state_dict().values())
    )
    probe = HFProbe(model, AutoTokenizer.from_pretrained(folder), torch.device("cpu"))
    stored = scores[(scores["n_edits"] == 3) & (scores["metric"] == "efficacy_acc")]
    assert len(stored) == 3
    by_uid = {e["uid"]: e for e in EDITS}
    live = probe.score(
        [ScoringPair(by_uid[uid]["prompt"], by_uid[uid]["target_new"]) for uid in stored["uid"]]
    )
    assert [s.token_accuracy for s in live] == pytest.approx(list(stored["value"]))
    assert not (out / "models" / runs["run_id"].iloc[0] / "ft-m" / "edits-6").exists()


def test_save_model_must_name_a_checkpoint(tmp_path, edits_file, micro_gpt2):
    result = CliRunner().invoke(main, [
        "run", "--task", str(edits_file), "--model", str(micro_gpt2), "--methods", "ft-m",
        "--batch-size", "3", "--checkpoints", "3,6", "--save-model", "4",
        "--out", str(tmp_path), "--device", "cpu",
    ])
    assert result.exit_code != 0 and "--save-model 4" in result.output and "3,6" in result.output


def test_edit_changes_a_held_model_without_a_runner(micro_gpt2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from editbench.core.probe import HFProbe
    from editbench.core.records import ScoringPair

    model = AutoModelForCausalLM.from_pretrained(micro_gpt2).eval()
    tokenizer = AutoTokenizer.from_pretrained(micro_gpt2)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    pairs = [ScoringPair(e["prompt"], e["target_new"]) for e in EDITS[:4]]
    unedited = [
        s.token_accuracy for s in HFProbe(model, tokenizer, torch.device("cpu")).score(pairs)
    ]

    method = editbench.edit(model, tokenizer, "ft-m", EDITS[:4], params={"lr": 1e-2}, batch_size=2)

    edited = [s.token_accuracy for s in HFProbe(model, tokenizer, torch.device("cpu")).score(pairs)]
    assert sum(edited) > sum(unedited) and min(edited) == 1.0
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and changed <= set(method.edited_parameters())


def test_edit_refuses_bad_input_in_one_line(micro_gpt2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = (
        AutoModelForCausalLM.from_pretrained(micro_gpt2),
        AutoTokenizer.from_pretrained(micro_gpt2),
    )
    with pytest.raises(ValueError, match="record 0: needs subject"):
        editbench.edit(model, tokenizer, "ft-m", [{"prompt": "a b", "target_new": "c"}])
    with pytest.raises(ValueError, match="did you mean 'lr'"):
        editbench.edit(model, tokenizer, "ft-m", EDITS[:1], params={"lrr": 1})


def test_run_refuses_bad_settings_before_running(tmp_path):
    with pytest.raises(ValueError, match="unknown option 'batchsize'; did you mean 'batch_size'"):
        editbench.run(batchsize=3, out=tmp_path)
    with pytest.raises(ValueError, match="'float64' is not one of"):
        editbench.run({"dtype": "float64"}, out=tmp_path)
    assert not (tmp_path / "results.sqlite").exists()


def test_a_resume_past_the_saved_checkpoint_says_the_model_is_not_saved(tmp_path, caplog):
    from editbench.harness.running.saved import warn_if_passed

    with caplog.at_level("WARNING", logger="editbench.harness.running.saved"):
        warn_if_passed(3, 2, tmp_path / "edits-3")  # not yet there: it will be saved
        warn_if_passed(None, 6, tmp_path / "edits-3")
        assert not caplog.records
        warn_if_passed(3, 6, tmp_path / "edits-3")
    assert "--save-model 3" in caplog.text and "--restart" in caplog.text
    caplog.clear()
    (tmp_path / "edits-3").mkdir()
    warn_if_passed(3, 6, tmp_path / "edits-3")  # saved before the run stopped
    assert not caplog.records


def test_edit_works_in_a_fresh_interpreter_that_imported_nothing_else(micro_gpt2):
    """The registry of methods fills on import of editbench.methods; edit() must not rely on a
    caller (or an earlier test) having imported it."""
    import subprocess
    import sys

    code = ("import editbench, transformers as tf\n"
            f"m = tf.AutoModelForCausalLM.from_pretrained({str(micro_gpt2)!r})\n"
            f"t = tf.AutoTokenizer.from_pretrained({str(micro_gpt2)!r})\n"
            "r = [{'prompt': 'Kalo Mirve0 lives in', 'subject': 'Kalo Mirve0',"
            " 'target_new': 'Fengal Vale'}]\n"
            "print(editbench.edit(m, t, 'ft-m', r).edited_parameters())\n")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "weight" in result.stdout


def test_a_run_that_builds_its_model_resolves_again_to_read_its_size(tmp_path, monkeypatch):
    """A cold run's plan could not read the model it was about to build (no config yet), so it
    ran its cells one at a time; the model is now built first and the plan made again."""
    from dataclasses import replace
    from types import SimpleNamespace

    from editbench.harness.api import resolved
    from editbench.harness.plan import resolve
    from editbench.harness.plan.settings import RunSpec

    calls = []

    class Task:
        def default_model(self):
            calls.append("built")
            (tmp_path / "model").mkdir(exist_ok=True)
            return str(tmp_path / "model")

    def resolve_sweep(spec):
        calls.append("resolved")
        shape = "shape" if (tmp_path / "model").exists() else None
        return [SimpleNamespace(model_shape=shape, task=Task())]

    monkeypatch.setattr(resolve, "resolve_sweep", resolve_sweep)
    spec = RunSpec()
    assert [p.model_shape for p in resolved(spec)] == ["shape"]
    assert calls == ["resolved", "built", "resolved"]
    calls.clear()  # built: resolved once
    assert [p.model_shape for p in resolved(spec)] == ["shape"] and calls == ["resolved"]
    calls.clear()  # a model the user named, or Ray's workers: as it was
    assert resolved(replace(spec, executor="ray"))[0].model_shape == "shape"
    (tmp_path / "model").rmdir()
    assert resolved(replace(spec, model="gpt2"))[0].model_shape is None
    assert "built" not in calls
