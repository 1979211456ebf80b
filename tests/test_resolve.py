"""Resolving a run (``harness/plan/resolve.py``): ``editbench run --dry-run`` prints the plan of the
default run and of a published model's config without reading any weights or writing anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from editbench.harness.cli.group import main
from editbench.harness.plan.resolve import default_methods, resolve
from editbench.harness.plan.settings import RunSpec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_weights(monkeypatch, tmp_path):
    """Reading any weights fails the test; the working folder is empty, so anything written
    shows."""
    import safetensors
    import safetensors.torch
    import torch
    import transformers

    # modules that bind ``safe_open`` at import: imported before the patch, so that a later test
    # does not inherit the refusing stand-in
    import transformers.integrations.accelerate  # noqa: F401
    import transformers.modeling_layers  # noqa: F401
    import transformers.modeling_utils  # noqa: F401

    def refuse(*args, **kwargs):
        raise AssertionError("weights were read")

    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr(safetensors, "safe_open", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr("editbench.core.models.load_model", refuse)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_default_run_dry_run_prints_its_plan_and_reads_no_weights(no_weights):
    result = CliRunner().invoke(main, ["run", "--dry-run"])
    assert result.exit_code == 0, result.output
    plan = resolve(RunSpec())
    assert f"plan of run {plan.run_id} (seed 0)" in result.output
    assert (
        "200 edits in 20 turns" in result.output
        and "checkpoints 10,20,50,100,200" in result.output
    )
    for name in default_methods():
        assert f"    {name} " in result.output
    assert "would stop it: nothing" in result.output
    assert list(no_weights.iterdir()) == []  # no results folder, no cache


def test_the_default_plan_says_once_why_each_left_out_method_is_left_out(no_weights, caplog):
    """The plan reads the default methods more than once; each reason is one line, not two."""
    import logging

    with caplog.at_level(logging.INFO):
        resolve(RunSpec())
    said = [r.getMessage() for r in caplog.records
            if r.getMessage().startswith("left out of the default methods")]
    assert said and len(said) == len(set(said))
    assert any("hiedit" in line for line in said)


def test_a_published_config_is_planned_at_its_scale(no_weights):
    config = ROOT / "tests" / "configs" / "llama-3-8b.json"
    result = CliRunner().invoke(main, [
        "run", "--dry-run", "--model", str(config), "--methods", "ft-m,memit",
        "--dtype", "bfloat16",
    ])
    assert result.exit_code == 0, result.output
    assert "recognised as llama-3-8b" in result.output and "bfloat16" in result.output
    assert "memit: taking the settings published for llama-3-8b" in result.output
    # a config file plans, but cannot run
    assert "--model" in result.output.split("would stop it:")[1]


def test_the_plan_holds_what_the_run_will_do(tmp_path, micro_llama):
    spec = RunSpec(methods=("ft-m", "memit"), model=str(micro_llama), edits=12, batch_size=5,
                   checkpoints=(5,), eval_sample=4, seed=(3,),
                   params={"pocket": {"n_entities": "20"}, "ft-m": {"lr": "0.01"}},
                   out=tmp_path / "out", cache_dir=tmp_path / "cache", device="cpu")
    plan = resolve(spec)
    assert plan.seed == 3 and plan.edits == 12 and plan.checkpoints == (5, 12)
    assert plan.batches == ((0, 5), (5, 10), (10, 12))
    assert [len(plan.positions[n]) for n in (5, 12)] == [4, 4] and plan.positions[12][-1] == 11
    assert (
        [m.label for m in plan.methods] == ["ft-m", "memit"]
        and plan.methods[0].config.lr == 0.01
    )
    assert {e.label for e in plan.estimates} == {"ft-m", "memit"}
    assert plan.backend == "hf" and plan.run_config["seed"] == 3
    again = resolve(spec)
    assert (
        again.run_id == plan.run_id
        and [r.uid for r in again.records] == [r.uid for r in plan.records]
    )
    other = resolve(RunSpec(**{**spec.to_mapping(), "seed": 4}))
    assert (
        other.run_id != plan.run_id
        and [r.uid for r in other.records] != [r.uid for r in plan.records]
    )
    with pytest.raises(ValueError, match="several seeds make several runs"):
        resolve(RunSpec(seed=(0, 1)))
    assert not spec.out.exists()
