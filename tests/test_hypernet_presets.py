"""The presets pin a schedule: optimiser steps taken, what learns, whether editing moves the normaliser."""

import pytest
import torch
from test_hypernet import make_context

from editbench.harness.runner import RunSpec, resolve_methods
from editbench.methods.hypernet.training import Trainer

SMALL = {"rank": "8", "n_blocks": "1", "train_batch": "2"}
PAPER = {"max_steps": "4", "val_every": "2", "patience": "10"}

# label -> optimiser steps on the tiny world (16 train records: 12 train, 4 validation = 6 batches of 2)
STEPS = {
    "mend@release": 6,  # one epoch, one step per batch
    "malmen@release": 6,
    "rledit@release": 1,  # one sequence, one step
    "rledit@paper": 4,  # max_steps here; a validation plateau in general
    "rledit@untrained": 0,
    "rledit@lr-only": 4,
}


def _method(label, micro_llama, tmp_path):
    name = label.partition("@")[0]
    schedule = {} if label.endswith(("@release", "@untrained")) else {label: PAPER}
    (plan,) = resolve_methods(RunSpec(methods=(label,), params={name: SMALL, **schedule}))
    return plan.cls(plan.config, make_context(micro_llama, tmp_path))


@pytest.mark.parametrize("label", sorted(STEPS))
def test_each_preset_takes_its_number_of_optimiser_steps(label, micro_llama, tmp_path, monkeypatch):
    method = _method(label, micro_llama, tmp_path)
    steps = {"n": 0}
    adam_step = torch.optim.Adam.step

    def counting(self, *args, **kwargs):
        steps["n"] += 1
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counting)
    before = {k: v.clone() for k, v in method.nets.state_dict().items()}
    method.fit(tmp_path / "editor", method.ctx.train_records())
    assert steps["n"] == STEPS[label]
    after = method.nets.state_dict()
    moved = {k.rsplit(".", 1)[-1] for k in after if "normaliser" not in k and not torch.equal(after[k], before[k])}
    if label == "rledit@lr-only":
        assert moved == {"lr"}
    elif label == "rledit@untrained":
        assert moved <= {"lr"}  # set by the scaling rule, never trained
    elif label.endswith("@release"):
        assert "shift" in moved and not moved & {"A", "B", "bias", "scale"}  # the released dead init
        lr = after[next(k for k in after if k.endswith(".lr"))]  # starts at 1e-6; Adam moves it ~1e-5 a step
        assert ((lr - 1e-6).abs() <= STEPS[label] * 1e-5 * 1.01).all() and ((lr - 1e-6).abs() > 5e-6).all()
    else:
        assert {"B", "bias", "shift", "lr"} <= moved


@pytest.mark.parametrize("label,moves", [("rledit@release", True), ("rledit@paper", False),
                                         ("malmen@release", True), ("mend", False)])
def test_whether_editing_updates_the_normaliser(label, moves, micro_llama, tmp_path):
    method = _method(label, micro_llama, tmp_path)
    records = method.ctx.train_records()
    trainer = Trainer(method, records, tmp_path / "unused")
    trainer._warm_up() if method.config.warm_up else method.update_normalisers(method.read_keys_and_grads(records[:4]))
    before = method.state_dict()
    method.apply(records[4:8])
    after = method.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before) == moves
