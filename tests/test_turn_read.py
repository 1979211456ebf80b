"""A turn's sub-batches read in one forward and backward pass (issue 28: edit throughput).

The releases read a turn in length-sorted sub-batches, one pass each, each with its token-mean
loss. Editing reads them in one pass whose loss is the sum of those token means, so every row's
gradient is the one its own pass gives; the pass is taken only where the turn fits the device's
free memory, else the sub-batches are read one by one. These tests hold the rows, their groups
(the release normaliser's merge units) and the edits to the sub-batched reading, and the plan's
estimate to the path that runs.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from test_hypernet import make_context

from editbench.core.costs import GiB, RunShape
from editbench.methods.hypernet import core, memory
from editbench.methods.malmen import MALMEN, MALMENConfig
from editbench.methods.ultraedit import RELEASE_SETTINGS, UltraEdit, UltraEditConfig

SUB_BATCH = 4
TURN = 10  # three sub-batches: 4, 4 and 2 records


def passes(monkeypatch) -> list[int]:
    """The padded width of every forward and backward pass the reads take, in order."""
    widths = []
    read = core.keys_and_grads

    def counted(model, modules, batch, *args, **kwargs):
        widths.append(batch.input_ids.shape[1])
        return read(model, modules, batch, *args, **kwargs)

    monkeypatch.setattr(core, "keys_and_grads", counted)
    return widths


def build(kind: str, path):
    ctx = make_context(path)
    if kind == "ultraedit":
        # the release's merge and sub-batches at an lr that moves a micro model's weights well above
        # their float32 rounding
        settings = {**RELEASE_SETTINGS, "sub_batch": SUB_BATCH, "lr": 1e-2}
        return UltraEdit(UltraEditConfig(**settings), ctx)
    # the RLEdit release's MALMEN: test-time rows enter the normaliser, merged per sub-batch
    config = MALMENConfig(sub_batch=SUB_BATCH, normaliser="release", edit_lr=1e-2,
                          update_normaliser_at_edit=True)
    return MALMEN(config, ctx)


def close(a: torch.Tensor, b: torch.Tensor, tolerance: float = 1e-6) -> bool:
    """Equal up to float32 rounding, measured against the larger entries of ``b``."""
    scale = float(b.abs().max())
    return scale > 0 and torch.allclose(a, b, rtol=10 * tolerance, atol=tolerance * scale)


@pytest.mark.parametrize("kind", ["ultraedit", "malmen"])
def test_one_pass_gives_every_sub_batch_its_own_rows_and_groups(kind, micro_llama, monkeypatch):
    method = build(kind, micro_llama)
    records = method.ctx.train_records()[:TURN]
    widths = passes(monkeypatch)
    separate = method.read_keys_and_grads(records)
    separate_widths = list(widths)
    widths.clear()
    whole = method.read_keys_and_grads(records, whole_turn=True)
    # the releases' three passes against one; the sub-batches are padded differently in them
    assert len(separate_widths) == 3 and len(widths) == 1
    assert widths[0] == max(separate_widths) > min(separate_widths)
    assert whole.groups == separate.groups and len(whole.groups) == 3
    for name in separate.keys:
        assert whole.keys[name].shape == separate.keys[name].shape
        assert close(whole.keys[name], separate.keys[name]), name
        assert close(whole.grads[name], separate.grads[name]), name


@pytest.mark.parametrize("kind", ["ultraedit", "malmen"])
def test_a_turn_that_does_not_fit_is_read_sub_batch_by_sub_batch_with_the_same_edit(
        kind, micro_llama, monkeypatch):
    """The edits of three turns, read whole where memory allows and sub-batch by sub-batch where it
    does not, agree in the weights and in the lifelong statistics."""
    widths = passes(monkeypatch)
    results = {}
    for free in (1 << 40, 0):  # a large device, then one with no room
        monkeypatch.setattr(memory, "free_bytes", lambda device, free=free: free)
        method = build(kind, micro_llama)
        records = method.ctx.train_records()
        widths.clear()
        for turn in range(3):
            method.apply(records[turn * TURN:(turn + 1) * TURN])
        results[free] = (
            copy.deepcopy(method.ctx.model.state_dict()), method.state_dict(), len(widths)
        )
    (whole, whole_state, whole_passes), (split, split_state, split_passes) = results.values()
    assert (whole_passes, split_passes) == (3, 9)
    edited = [m.parameter for m in build(kind, micro_llama).modules]
    original = build(kind, micro_llama).ctx.model.state_dict()
    for name in edited:
        assert not torch.equal(whole[name], original[name])  # the edits moved the weight
        # three turns of solves and normaliser merges carry the rounding on (about 3e-6 measured)
        assert close(whole[name] - original[name], split[name] - original[name], 1e-5), name
    for name in whole_state:
        assert close(whole_state[name].double(), split_state[name].double(), 1e-5), name


def test_the_plan_estimates_the_read_that_runs():
    """UltraEdit's release turns (100 edits in sub-batches of 10) on Llama-3-8B: the whole turn's
    read on an 80 GB device, one sub-batch's where the turn would not fit beside the weights."""
    from editbench.harness.plan.estimate import estimate_methods, model_shape

    shape = model_shape("tests/configs/llama-3-8b.json", "bfloat16")
    run = RunShape(edits=1000, batch_size=100, scored_records=1000, device_bytes=80 * GiB)

    def editing(run):
        (planned,) = estimate_methods(shape, run, ["ultraedit@release"])
        (phase,) = [p for p in planned.cost.phases if p.phase == "editing"]
        return planned.cost.resident_bytes, phase

    resident, roomy = editing(run)
    _, tight = editing(dataclasses.replace(run, device_bytes=resident + 8 * GiB))
    assert roomy.note == "" and tight.note == "turns read 10 records per pass"
    # the read is about linear in the records: ten sub-batches' worth against one
    assert 4 * tight.transient_bytes < roomy.transient_bytes
    assert tight.transient_bytes < 8 * GiB < roomy.transient_bytes
