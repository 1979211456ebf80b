"""The shipped offline world: the default run's pocket model and trained editors are the package's
own bytes, checked by SHA-256 before use, and are exactly the entries the default run looks up."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import pytest
import torch
from click.testing import CliRunner

from editbench.core import artifacts
from editbench.core.configs import config_hash
from editbench.core.method import EditContext, MethodRef, is_trainable
from editbench.core.models import ModelLayout, load_model
from editbench.core.task import TaskOptions
from editbench.harness.cli.group import main
from editbench.harness.plan.resolve import default_methods
from editbench.methods import METHODS
from editbench.tasks import pocket_model
from editbench.tasks.pocket import PocketConfig, PocketTask

DEFAULT_POCKET = f"models/pocket-{config_hash(pocket_model.FORMAT_VERSION, asdict(PocketConfig()), asdict(pocket_model.PocketModelConfig()))}"  # noqa: E501


def _fake_root(tmp_path):
    root = tmp_path / "artifacts"
    folder = root / "models" / "pocket-abc"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    manifest = {
        "format": artifacts.MANIFEST_FORMAT,
        "entries": {
            "models/pocket-abc": {"description": "test", "files": artifacts.folder_digests(folder),
                                  "code": "c0de"}
        },
    }
    (root / artifacts.MANIFEST).write_text(json.dumps(manifest))
    artifacts.forget_verified()
    return root, folder


def test_a_sound_entry_is_used_and_a_damaged_one_is_refused_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv(artifacts.SKIP_VARIABLE, raising=False)
    root, folder = _fake_root(tmp_path)
    assert artifacts.shipped("models/pocket-abc", root, code="c0de") == folder
    assert artifacts.shipped("models/pocket-other", root, code="c0de") is None
    (folder / "model.safetensors").write_bytes(b"weightz")
    artifacts.forget_verified()
    with pytest.raises(artifacts.ArtifactError, match=r"model\.safetensors has SHA-256"):
        artifacts.shipped("models/pocket-abc", root, code="c0de")
    (folder / "model.safetensors").unlink()
    artifacts.forget_verified()
    with pytest.raises(artifacts.ArtifactError, match=r"model\.safetensors is missing"):
        artifacts.shipped("models/pocket-abc", root, code="c0de")


def test_a_file_the_manifest_does_not_list_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(artifacts.SKIP_VARIABLE, raising=False)
    root, folder = _fake_root(tmp_path)
    (folder / "extra.bin").write_bytes(b"x")
    with pytest.raises(artifacts.ArtifactError, match="extra.bin"):
        artifacts.shipped("models/pocket-abc", root, code="c0de")


def test_an_entry_built_by_other_code_is_passed_over_and_said_once(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv(artifacts.SKIP_VARIABLE, raising=False)
    root, folder = _fake_root(tmp_path)
    with caplog.at_level("WARNING"):
        for _ in range(2):
            assert artifacts.shipped("models/pocket-abc", root, code="f1xed") is None
            assert artifacts.located("models/pocket-abc", root, code="f1xed") is None
    said = [r.getMessage() for r in caplog.records if "other code" in r.getMessage()]
    assert len(said) == 1 and "c0de" in said[0] and "f1xed" in said[0]
    assert artifacts.located("models/pocket-abc", root, code="c0de") == folder


def test_the_shipped_world_was_built_by_this_code():
    """Each entry records the code hash of what built it; a change to that code (the training, the
    world, anything they import: core/identity.py) must come with `editbench artifacts --rebuild`,
    which records the new hash (and new bytes where the new code builds others)."""
    from editbench.harness.checks.artifacts import expected_code

    stale = {name: (entry.code, expected_code(name))
             for name, entry in artifacts.entries().items() if entry.code != expected_code(name)}
    assert not stale, f"shipped entries built by other code (manifest, now): {stale}; rebuild " \
        "them with `editbench artifacts --rebuild` and say in the commit whether the bytes changed"


def test_the_skip_variable_builds_locally(tmp_path, monkeypatch):
    root, _ = _fake_root(tmp_path)
    monkeypatch.setenv(artifacts.SKIP_VARIABLE, "1")
    assert artifacts.shipped("models/pocket-abc", root, code="c0de") is None


def test_the_package_ships_a_sound_world():
    shipped = artifacts.entries()
    assert DEFAULT_POCKET in shipped, (
        "the default world's pocket model is not shipped: editbench artifacts --rebuild"
    )
    for entry in shipped.values():
        artifacts.verify(entry)
    built = artifacts.read_manifest()["built_with"]
    assert {"torch", "cpu_capability", "threads", "date"} <= set(built)


def test_the_lifelong_scenario_ships_its_model_and_loads_it_without_training(monkeypatch,
                                                                               tmp_path):
    """Its 20,000 training steps diverge between CPUs as the default model's do, so the scenario's
    figures would depend on the machine that trained it (docs/pocket-world.md)."""
    from editbench.harness.checks.artifacts import model_entries
    from editbench.tasks.pocket_lifelong import LifelongPocketTask

    monkeypatch.delenv(artifacts.SKIP_VARIABLE, raising=False)
    artifacts.forget_verified()

    def no_training(*args, **kwargs):
        raise AssertionError("the lifelong model was trained, not taken from the package")

    monkeypatch.setattr(pocket_model, "train_pocket_model", no_training)
    entry = {task: name for name, (task, _) in model_entries().items()}["pocket-lifelong"]
    assert entry in artifacts.entries() and entry != DEFAULT_POCKET
    task = LifelongPocketTask(TaskOptions(cache_dir=tmp_path), LifelongPocketTask.Config())
    assert task.default_model() == str(artifacts.SHIPPED_ROOT / entry)
    assert "lifelong" in artifacts.entries()[entry].description


def test_the_default_run_loads_the_shipped_pocket_model_without_training(monkeypatch, tmp_path):
    monkeypatch.delenv(artifacts.SKIP_VARIABLE, raising=False)
    artifacts.forget_verified()

    def no_training(*args, **kwargs):
        raise AssertionError("the default world's model was trained, not taken from the package")

    monkeypatch.setattr(pocket_model, "train_pocket_model", no_training)
    task = PocketTask(TaskOptions(cache_dir=tmp_path), PocketConfig())
    assert task.default_model() == str(artifacts.SHIPPED_ROOT / DEFAULT_POCKET)


def test_every_trained_editor_of_the_default_run_is_shipped(monkeypatch, tmp_path):
    """Each hypernetwork method of the default run finds its editor in the package, under the cache
    key it computes itself (model fingerprint, settings, train data, seed 0)."""
    monkeypatch.delenv(artifacts.SKIP_VARIABLE, raising=False)
    task = PocketTask(TaskOptions(cache_dir=tmp_path), PocketConfig())
    model, tokenizer = load_model(
        artifacts.SHIPPED_ROOT / DEFAULT_POCKET, torch.device("cpu"), torch.float32
    )
    ctx = EditContext(
        model=model,
        tokenizer=tokenizer,
        layout=ModelLayout.of(model),
        device=torch.device("cpu"),
        cache_dir=tmp_path,
        task=task,
        seed=0,
        generator=torch.Generator().manual_seed(0),
        train_records=lambda: task.load("train"),
    )
    trainable = [name for name in default_methods() if is_trainable(METHODS[name])]
    assert {"mend", "malmen", "rledit"} <= set(trainable)
    shipped = artifacts.entries()
    for name in trainable:
        method = METHODS[name](
            MethodRef.parse(name).config({}, None), ctx
        )  # as the runner makes it
        entry, code = method.cache_entry()
        assert entry in shipped and shipped[entry].code == code, name


def test_the_artifacts_command_checks_every_entry():
    result = CliRunner().invoke(main, ["artifacts"])
    assert result.exit_code == 0, result.output
    assert result.output.count(" ok") == len(artifacts.entries())
    assert "kernels" in result.output


def test_the_artifacts_command_fails_on_an_entry_this_code_would_not_use(monkeypatch):
    from editbench.harness.cli import artifacts as command

    monkeypatch.setattr(command, "expected_code", lambda name: "f1xed")
    result = CliRunner().invoke(main, ["artifacts"])
    assert result.exit_code == 1
    assert result.output.count("NOT USED: built by other code") == len(artifacts.entries())
    assert "f1xed" in result.output and "--rebuild" in result.output


def test_a_rebuild_lays_out_what_a_short_default_run_built_with_a_fresh_manifest(
    tmp_path, monkeypatch
):
    """--rebuild runs the default run's trainable methods in a fresh cache (shipped entries off) and
    copies what that built; here the run is a stand-in that builds two entries."""
    from editbench.harness.checks import artifacts as command
    from editbench.harness.checks.artifacts import expected_code
    from editbench.harness.running import runner

    seen = {}

    class FakeRunner:
        def __init__(self, plan):
            seen["plan"] = plan
            seen["skip"] = artifacts.shipped(DEFAULT_POCKET, code=expected_code(DEFAULT_POCKET)) \
                is None

        def run(self):
            cache = seen["plan"].cache_dir
            model = cache / "models" / "pocket-new-c0de"
            editor = cache / "hypernets" / "mend-new-f1xed"
            for folder in (model, editor / "state-000010"):
                folder.mkdir(parents=True)
            (model / "config.json").write_text("{}")
            (editor / "config.json").write_text(
                json.dumps({"model": f"{cache.as_posix()}/models/pocket-new-c0de"})
            )
            (editor / "editor.safetensors").write_bytes(b"net")
            (editor / "state-000010" / "net.safetensors").write_bytes(b"partial")

    def fake_task_model(task, cache):  # the lifelong scenario's model: a task of its own
        seen.setdefault("tasks", []).append(task)
        if task == "pocket-lifelong":
            (cache / "models" / "pocket-life-l1fe").mkdir(parents=True)
            (cache / "models" / "pocket-life-l1fe" / "config.json").write_text("{}")

    monkeypatch.setattr(runner, "Runner", FakeRunner)
    monkeypatch.setattr(command, "_build_task_model", fake_task_model)
    monkeypatch.delenv(artifacts.SKIP_VARIABLE, raising=False)
    into = tmp_path / "shipped"
    (into / "models" / "pocket-old").mkdir(parents=True)
    manifest = command.build_artifacts(into)
    assert seen["skip"] and artifacts.SKIP_VARIABLE not in os.environ
    assert {m.label for m in seen["plan"].methods} == {"mend", "malmen", "rledit"}
    assert seen["plan"].seed == 0
    # named as the package ships them, each with the code hash of what built it
    assert {n: e["code"] for n, e in manifest["entries"].items()} == {
        "models/pocket-new": "c0de", "hypernets/mend-new": "f1xed", "models/pocket-life": "l1fe"}
    assert seen["tasks"] == ["pocket", "pocket-lifelong"]
    assert (
        not (into / "models" / "pocket-old").exists()
        and not (into / "hypernets/mend-new/state-000010").exists()
    )
    assert json.loads((into / "hypernets/mend-new/config.json").read_text()) == {
        "model": "models/pocket-new-c0de"
    }
    for entry in artifacts.entries(into).values():
        artifacts.verify(entry, into)
    assert json.loads((into / artifacts.MANIFEST).read_text())["built_with"]["seeds"] == [0]
