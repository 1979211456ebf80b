"""Checks before any model loads (issue 17): a method's missing requirement and a plan that does not
fit stop the run in one line naming the fix; the record keeps what ran."""

from __future__ import annotations

import re

import pytest
from conftest import write_edits

from editbench.harness.plan import preflight
from editbench.harness.plan.resolve import resolve
from editbench.harness.plan.settings import RunSpec
from editbench.harness.running.runner import Runner


def _spec(tmp_path, model, **kw):
    base = dict(
        task="jsonl", data=str(write_edits(tmp_path / "edits.jsonl", 8)), model=str(model), edits=8,
        batch_size=4, out=tmp_path / "out", device="cpu", cache_dir=tmp_path / "cache",
        gen_eval=False
    )
    base.update(kw)
    return RunSpec(**base)


def _never_load(monkeypatch):
    """Any model load fails the test: these checks must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the checks")
    monkeypatch.setattr("editbench.harness.running.runner.load_model", refuse)


def _refused(plan, pattern: str) -> None:
    """The finding is in the plan's preflight, and running the plan stops on it before loading."""
    assert any(re.search(pattern, line) for line in preflight.preflight(plan)), (
        preflight.preflight(plan)
    )
    with pytest.raises(ValueError, match=pattern):
        Runner(plan).run()
    assert not (plan.spec.out / "results.sqlite").exists()  # nothing written either


def test_a_plan_that_does_not_fit_is_refused_before_loading_unless_ignored(
    tmp_path, micro_llama, monkeypatch
):
    from editbench.harness.plan import estimate

    _never_load(monkeypatch)
    monkeypatch.setattr(estimate, "device_memory", lambda device: 1024)  # a 1 KiB device
    _refused(
        resolve(_spec(tmp_path, micro_llama, methods=("ft-m",))),
        r"ft-m needs about .* GiB .* --ignore-plan",
    )
    plan = resolve(_spec(tmp_path, micro_llama, methods=("ft-m",), ignore_plan=True))
    assert preflight.preflight(plan) == [] and plan.edits == 8


def test_resolving_changes_nothing_and_preflight_only_reads_the_plan(
    tmp_path, micro_llama, monkeypatch
):
    _never_load(monkeypatch)
    spec = _spec(tmp_path, micro_llama, methods=("ft-m", "memit"))
    plan = resolve(spec)
    before = (plan.backend, plan.capacity, plan.estimates, plan.run_id)
    preflight.preflight(plan)
    assert (plan.backend, plan.capacity, plan.estimates, plan.run_id) == before
    assert resolve(spec).run_id == plan.run_id  # the same settings resolve to the same run
    assert not spec.out.exists() and not (tmp_path / "cache").exists()


def test_a_trained_editor_without_a_train_split_is_refused_before_loading(
    tmp_path, micro_llama, monkeypatch
):
    _never_load(monkeypatch)
    _refused(resolve(_spec(tmp_path, micro_llama, methods=("mend",))),
             r"mend learns from the task's train split.*--editor mend=DIR")


def test_key_statistics_from_the_hub_without_the_datasets_extra_are_refused_before_loading(
    tmp_path, micro_llama, monkeypatch
):
    _never_load(monkeypatch)
    monkeypatch.setattr(
        "importlib.util.find_spec", lambda name, *a: None if name == "datasets" else object()
    )
    _refused(resolve(_spec(tmp_path, micro_llama, methods=("memit",),
                           params={"memit": {"stats_corpus": "hub"}})),
             r"memit: its key statistics stream .*editbench\[hub\]")


def test_the_plan_logs_each_methods_peak(tmp_path, micro_llama, caplog):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Kalo Mirve lives in Fengal Vale.\n" * 20)
    plan = resolve(_spec(tmp_path, micro_llama, methods=("ft-m", "memit"),
                         params={"memit": {"stats_corpus": str(corpus)}}))
    with caplog.at_level("INFO", logger="editbench.harness.plan.preflight"):
        preflight.log_peaks(plan)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("plan: ft-m peaks at") for line in lines)
    assert any(line.startswith("plan: memit peaks at") for line in lines)


def test_a_sharded_ray_cell_asks_for_the_gpus_its_plan_needs(monkeypatch):
    from types import SimpleNamespace

    import torch

    from editbench.harness.running.executors import gpus_for_cell

    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda device: SimpleNamespace(total_memory=80 * 2**30),
    )
    sharded = SimpleNamespace(spec=SimpleNamespace(device_map="auto"), device=torch.device("cuda"),
                              planned_peak={"memit": 150 * 2**30, "ft-m": 20 * 2**30}.get)
    assert gpus_for_cell(sharded, "memit", 1.0) == 2.0
    assert gpus_for_cell(sharded, "ft-m", 1.0) == 1.0
    single = SimpleNamespace(spec=SimpleNamespace(device_map=None), device=torch.device("cuda"),
                             planned_peak={"memit": 150 * 2**30}.get)
    assert gpus_for_cell(single, "memit", 1.0) == 1.0


def test_a_sharded_run_without_accelerate_is_refused_before_loading(
        tmp_path, micro_llama, monkeypatch):
    import importlib.util

    _never_load(monkeypatch)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "accelerate" else real(name, *a))
    _refused(resolve(_spec(tmp_path, micro_llama, methods=("ft-m",), device_map="auto")),
             r'--device-map auto .*editbench\[shard\]')
