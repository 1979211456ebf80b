"""`editbench train`: checkpoints, resume after an interruption, loading, the run's cache."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from test_hypernet import make_context

from editbench.core.method import MethodSetupError
from editbench.core.records import EditRecord, check_disjoint
from editbench.harness.cli.group import main
from editbench.harness.plan.resolve import resolve
from editbench.harness.plan.settings import RunSpec
from editbench.harness.running.runner import Runner
from editbench.methods.hypernet import HypernetMethod
from editbench.methods.hypernet.storage import load_editor
from editbench.methods.hypernet.training import Trainer
from editbench.methods.malmen import MALMEN, MALMENConfig
from editbench.methods.rledit import RLEdit, RLEditConfig

FAST = dict(rank=8, train_batch=2, max_steps=6, val_every=2, patience=10, meta_lr=1e-3)
CASES = {
    "malmen": (MALMEN, MALMENConfig(**FAST)),
    "rledit": (RLEdit, RLEditConfig(**FAST, n_blocks=2, sequence_length=3, depth=2)),
}


class Interrupted(Exception):
    pass


def _fit(path, folder, cls, config, interrupt_after=None, monkeypatch=None):
    ctx = make_context(path, folder.parent)
    method = cls(config, ctx)
    before = {m.parameter: ctx.parameter(m.parameter).clone() for m in method.modules}
    if interrupt_after is not None:
        calls = {"n": 0}
        walk = Trainer.walk

        def flaky(self, sequence, train, key=""):
            calls["n"] += train
            if train and calls["n"] > interrupt_after:
                raise Interrupted
            return walk(self, sequence, train, key)

        monkeypatch.setattr(Trainer, "walk", flaky)
    try:
        method.fit(folder, ctx.train_records())
    finally:
        monkeypatch is not None and monkeypatch.undo()
    # the model is left unedited
    assert all(torch.equal(ctx.parameter(n), w) for n, w in before.items())
    return method


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_interrupted_training_resumes_to_the_uninterrupted_result(
    name, micro_llama, tmp_path, monkeypatch
):
    cls, config = CASES[name]
    _fit(micro_llama, tmp_path / "straight" / "ed", cls, config)
    broken = tmp_path / "broken" / "ed"
    with pytest.raises(Interrupted):  # dies between the checkpoints at steps 2 and 4
        _fit(micro_llama, broken, cls, config, interrupt_after=3, monkeypatch=monkeypatch)
    assert [p.name for p in broken.glob("state-*")] == ["state-000002"]
    assert not (broken / "editor.safetensors").exists()
    _fit(micro_llama, broken, cls, config)
    straight = load_file(tmp_path / "straight" / "ed" / "editor.safetensors")
    resumed = load_file(broken / "editor.safetensors")
    assert (
        straight.keys() == resumed.keys()
        and all(torch.equal(straight[k], resumed[k]) for k in straight)
    )
    summary = json.loads((broken / "history.json").read_text())
    assert summary == json.loads((tmp_path / "straight" / "ed" / "history.json").read_text())
    assert [h["step"] for h in summary["history"]] == [0, 2, 4, 6] and summary["steps"] == 6
    best = min(h["val_loss"] for h in summary["history"])
    assert best <= summary["kept_val_loss"] <= best * (1 + 1e-3)  # the best network is the one kept
    assert not list(broken.glob("state-*"))


def test_a_folder_refuses_training_with_other_settings(micro_llama, tmp_path):
    cls, config = CASES["malmen"]
    _fit(micro_llama, tmp_path / "ed", cls, MALMENConfig(**{**FAST, "max_steps": 0}))
    with pytest.raises(ValueError, match="other settings"):
        _fit(micro_llama, tmp_path / "ed", cls, config)


def test_loading_checks_method_and_architecture(micro_llama, tmp_path):
    folder = tmp_path / "ed"
    trained = _fit(micro_llama, folder, MALMEN, MALMENConfig(**{**FAST, "max_steps": 2}))
    # as prepare() does: the network kept (the best by validation, not the last)
    load_editor(trained, folder)
    fresh = MALMEN(MALMENConfig(**FAST), make_context(micro_llama))
    load_editor(fresh, folder)
    ours = {k: v for k, v in fresh.nets.state_dict().items()}
    assert all(torch.equal(ours[k], v) for k, v in trained.nets.state_dict().items())
    with pytest.raises(ValueError, match="rank=8"):
        load_editor(MALMEN(MALMENConfig(**{**FAST, "rank": 4}), make_context(micro_llama)), folder)
    with pytest.raises(ValueError, match="holds a malmen editor"):
        load_editor(RLEdit(RLEditConfig(**FAST), make_context(micro_llama)), folder)
    with pytest.raises(MethodSetupError, match="no trained editor"):
        load_editor(fresh, tmp_path / "nothing")


def test_train_refuses_a_train_split_that_overlaps_the_scored_one():
    a = EditRecord(uid="1", prompt="p is", subject="p", target_new="x")
    b = EditRecord(uid="2", prompt="q is", subject="q", target_new="y")
    check_disjoint([a], [b], "t", "eval")
    with pytest.raises(ValueError, match="overlaps its 'eval' split.*'1'"):
        check_disjoint(
            [a], [b, EditRecord(uid="1", prompt="other", subject="o", target_new="z")], "t",
            "its 'eval' split"
        )
    with pytest.raises(ValueError, match="prompt 'q is'"):
        check_disjoint(
            [EditRecord(uid="9", prompt="q is", subject="q", target_new="w")], [b], "t", "eval"
        )


POCKET = ["--param", "pocket.n_entities=20"]


def test_train_command_then_run_with_the_checkpoint(micro_llama, tmp_path):
    settings = [f"--param=mend.{k}={v}" for k, v in FAST.items()]
    out = tmp_path / "mend-editor"
    result = CliRunner().invoke(main, [
        "train", "--method", "mend", "--model", str(micro_llama), *POCKET, *settings,
        "--out", str(out), "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    assert "kept the network of step" in result.output and (out / "editor.safetensors").is_file()
    saved = json.loads((out / "config.json").read_text())
    assert saved["method"] == "mend" and saved["identity"]["config"]["rank"] == 8
    assert set(saved["edit_lr"]) == {name for name, *_ in saved["modules"]}
    assert all(lr > 0 for lr in saved["edit_lr"].values())
    result = CliRunner().invoke(main, [
        "run", "--methods", "mend", "--editor", f"mend={out}", "--model", str(micro_llama),
        *POCKET, *settings, "--edits", "8", "--batch-size", "4",
        "--out", str(tmp_path / "run"), "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    assert "mend" in result.output
    bad = CliRunner().invoke(main, [
        "train", "--method", "ft-m", "--model", str(micro_llama), *POCKET,
        "--out", str(tmp_path / "x"),
    ])
    assert bad.exit_code != 0 and "learns nothing" in bad.output and "rledit" in bad.output


def test_run_trains_once_then_loads_from_the_cache(micro_llama, tmp_path, monkeypatch):
    params = {
        "pocket": {"n_entities": "20"},
        "malmen": {k: str(v) for k, v in {**FAST, "max_steps": 2}.items()},
    }

    def spec(out):
        return RunSpec(
            methods=("malmen",), model=str(micro_llama), edits=8, batch_size=4, params=params,
            out=tmp_path / out, device="cpu", cache_dir=tmp_path / "cache"
        )

    assert Runner(resolve(spec("first"))).run().ok
    (cached,) = (tmp_path / "cache" / "hypernets").glob("malmen-*")
    assert (cached / "editor.safetensors").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("trained again despite the cache")

    monkeypatch.setattr(HypernetMethod, "fit", no_training)
    assert Runner(resolve(spec("second"))).run().ok


def test_two_trainings_into_one_folder_do_not_interleave(micro_llama, tmp_path):
    from editbench.core.cache import Busy, exclusive_lock
    from editbench.harness.running.train import train_editor

    out = tmp_path / "editor"
    with (
        exclusive_lock(out / ".lock", "another training", wait=False),
        pytest.raises(Busy, match="training into"),
    ):
        train_editor(
            "malmen", out, model=str(micro_llama), params={"pocket": {"n_entities": "20"}},
            device="cpu", cache_dir=tmp_path / "cache"
        )
