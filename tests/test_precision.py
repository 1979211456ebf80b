"""Float32 master copies: a long stream of small edits survives a bf16 model (issue 17)."""

import pytest
import torch

from editbench.core.precision import MasterWeights, split_state
from editbench.harness.checks.precision_check import _micro_llama, precision_check


def test_two_thousand_small_batches_on_bf16_end_near_float32_only_with_master_copies():
    report = precision_check("cpu", batches=2000)
    # with master copies the only error left is one final rounding of the float32 result to bf16
    assert abs(report.weight_error_master - report.weight_error_one_rounding) < 1e-6, report
    assert report.weight_error_master < 0.1, report
    assert report.logit_error_master < 0.1, report
    # without them most updates round away: the bf16 model ends far from the float32 one
    assert report.weight_error_rounded > 0.5, report
    assert report.logit_error_rounded > 0.5, report


def test_master_copies_start_from_the_loaded_weight_and_only_for_low_precision_tensors():
    fp32 = _micro_llama(0)
    writer = MasterWeights(fp32)
    name = "model.layers.0.mlp.down_proj.weight"
    assert not writer.keeps(name)
    writer.add(name, torch.ones_like(fp32.get_parameter(name)))
    assert writer.copies == {}  # float32 models are written directly
    bf16 = _micro_llama(0).to(torch.bfloat16)
    writer = MasterWeights(bf16)
    before = bf16.get_parameter(name).detach().clone()
    writer.add(name, torch.zeros_like(before, dtype=torch.float32))
    assert torch.equal(writer.copies[name], before.float())
    assert torch.equal(bf16.get_parameter(name), before)


def test_master_copies_survive_a_snapshot_round_trip():
    name = "model.layers.1.mlp.down_proj.weight"
    model = _micro_llama(0).to(torch.bfloat16)
    writer = MasterWeights(model)
    tiny = torch.full_like(model.get_parameter(name), 1e-6, dtype=torch.float32)
    for _ in range(10):
        writer.add(name, tiny)
    state, masters = split_state({"method.count": torch.tensor(3), **writer.state_dict()})
    assert list(state) == ["method.count"]
    resumed = _micro_llama(0).to(torch.bfloat16)
    # the snapshot's rounded weights
    resumed.get_parameter(name).data.copy_(model.get_parameter(name))
    again = MasterWeights(resumed)
    again.load_state_dict(masters)
    assert torch.equal(again.copies[name], writer.copies[name])
    for _ in range(10):
        writer.add(name, tiny)
        again.add(name, tiny)
    assert torch.equal(again.copies[name], writer.copies[name])
    assert torch.equal(resumed.get_parameter(name), model.get_parameter(name))


def test_fine_tuning_a_bf16_model_trains_the_float32_master_copy(micro_llama):
    from editbench.core.method import EditContext
    from editbench.core.models import ModelLayout, load_model
    from editbench.core.records import EditRecord
    from editbench.methods.ft import FTM

    model, tokenizer = load_model(micro_llama, torch.device("cpu"), torch.bfloat16)
    ctx = EditContext(
        model=model, tokenizer=tokenizer, layout=ModelLayout.of(model), device=torch.device("cpu"),
        cache_dir=micro_llama, task=None, seed=0, generator=torch.Generator()
    )  # type: ignore[arg-type]
    method = FTM(FTM.Config(steps=3, lr=1e-3), ctx)
    (name,) = method.edited_parameters()
    before = model.get_parameter(name).detach().clone()
    method.apply([EditRecord(
        uid="e0", prompt="Kalo Mirve lives in", target_new=" Fengal Vale", subject="Kalo Mirve"
    )])
    master = ctx.masters.copies[name]
    weight = model.get_parameter(name)
    assert torch.equal(weight, master.to(torch.bfloat16))  # the model holds the rounded copy
    assert not torch.equal(master, weight.float())  # the copy keeps what bf16 cannot
    assert not torch.equal(weight, before)
    assert not master.requires_grad and not weight.requires_grad


@pytest.mark.slow
def test_selfcheck_on_a_cpu_says_what_it_skipped_and_runs_the_rest(tmp_path):
    import json

    from click.testing import CliRunner

    from editbench.harness.cli.group import main

    result = CliRunner().invoke(main, [
        # the plan check of every method is tests/test_costs.py's; here three, one per family
        "selfcheck", "--device", "cpu", "--families", "gpt2", "--plan-methods", "ft-l,memit,mend",
        "--bench-sizes", "20",
        "--bench-methods", "ultraedit,retrieval", "--bench-pairs", "200",
        "--out", str(tmp_path / "selfcheck.json"),
    ])
    assert result.exit_code == 0, result.output
    assert "skipped on CPU" in result.output
    assert "vLLM parity: skipped (needs a CUDA GPU)" in result.output
    figures = json.loads((tmp_path / "selfcheck.json").read_text())
    assert figures["precision"]["weight_error_rounded"] > 0.5
    assert {row["what"] for row in figures["plan_vs_measured"]} >= {"evaluation", "memit", "mend"}
    bench = figures["bench"]
    assert bench["scoring"]["prediction_mismatches"] == 0
    assert {(row["method"], row["edits"], row["status"]) for row in bench["edit_throughput"]} == \
        {("ultraedit", 20, "done"), ("retrieval", 20, "done")}
    assert "edit throughput and peak memory" in result.output
