"""The presets pin a schedule: optimiser steps taken, what learns, whether editing moves the
normaliser."""

import pytest
import torch
from test_hypernet import make_context

from editbench.harness.plan.resolve import method_setups
from editbench.harness.plan.settings import RunSpec
from editbench.methods.hypernet.training import Trainer

SMALL = {"rank": "8", "n_blocks": "1", "train_batch": "2"}
PAPER = {"max_steps": "4", "val_every": "2", "patience": "10"}

# label -> optimiser steps on the tiny world (16 train records: 12 train, 4 validation = 6 batches
# of 2)
STEPS = {
    "mend@release": 6,  # one epoch, one step per batch
    "malmen@release": 6,
    "mend@rledit-release": 6,
    "malmen@rledit-release": 6,
    "rledit@release": 1,  # one sequence, one step
    "rledit@paper": 4,  # max_steps here; a validation plateau in general
    "rledit@untrained": 0,
    "rledit@lr-only": 4,
}


def _method(label, micro_llama, tmp_path):
    name = label.partition("@")[0]
    schedule = {} if "release" in label or label.endswith("@untrained") else {label: PAPER}
    if label == "rledit@release":  # its sequence is 400 batches; 6 walks the same code
        schedule = {label: {"sequence_length": "6"}}
    (plan,) = method_setups(RunSpec(methods=(label,), params={name: SMALL, **schedule}))
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
    # the 16 the counts above assume
    method.fit(tmp_path / "editor", method.ctx.train_records()[:16])
    assert steps["n"] == STEPS[label]
    after = method.nets.state_dict()
    moved = {
        k.rsplit(".", 1)[-1]
        for k in after
        if "normaliser" not in k and not torch.equal(after[k], before[k])
    }
    if label == "rledit@lr-only":
        assert moved == {"lr"}
    elif label == "rledit@untrained":
        assert moved <= {"lr"}  # set by the scaling rule, never trained
    elif "release" in label:
        assert {"B", "bias", "shift"} <= moved  # the released init learns at once (clamp, not relu)
        # starts at 1e-6; Adam moves it ~1e-5 a step
        lr = after[next(k for k in after if k.endswith(".lr"))]
        assert (
            ((lr - 1e-6).abs() <= STEPS[label] * 1e-5 * 1.01).all()
            and ((lr - 1e-6).abs() > 5e-6).all()
        )
    else:
        assert {"B", "bias", "shift", "lr"} <= moved


@pytest.mark.parametrize("label,moves", [("rledit@release", True), ("rledit@paper", False),
                                         ("malmen@release", True), ("mend", False)])
def test_whether_editing_updates_the_normaliser(label, moves, micro_llama, tmp_path):
    method = _method(label, micro_llama, tmp_path)
    records = method.ctx.train_records()
    trainer = Trainer(method, records, tmp_path / "unused")
    (
        trainer._warm_up()
        if method.config.warm_up
        else method.update_normalisers(method.read_keys_and_grads(records[:4]))
    )
    before = method.state_dict()
    method.apply(records[4:8])
    after = method.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before) == moves


def test_release_presets_carry_the_released_settings():
    def config(label):
        (plan,) = method_setups(RunSpec(methods=(label,)))
        return plan.config

    malmen, mend, rledit = (
        config("malmen@release"), config("mend@release"), config("rledit@release")
    )
    for c in (malmen, mend, rledit):
        assert (c.edit_lr, c.meta_lr, c.lr_meta_lr, c.max_grad_norm) == (1e-6, 1e-5, 1e-5, 1.0)
        assert c.normaliser == "release" and not c.cap_rank and not c.warm_up and not c.select_best
    assert (malmen.train_batch, malmen.sub_batch, malmen.max_epochs, malmen.max_steps) == (
        512, 32, 1, None
    )
    assert (malmen.rank, malmen.n_blocks, malmen.loc_coef) == (1920, 2, 1.0)
    assert mend.tokens == "all" and (mend.train_batch, mend.sub_batch) == (512, 32)
    assert (rledit.train_batch, rledit.sub_batch, rledit.sequence_length, rledit.max_steps) == (
        20, 4, 400, 1
    )
    assert rledit.clip_every_step and not rledit.reg_grad and not rledit.backtrack_grad
    assert (rledit.rank, rledit.n_blocks, rledit.depth, rledit.decay, rledit.loc_coef) == (
        1024, 4, 10, 0.95, 0.6
    )
    baseline = config("malmen@rledit-release")
    assert (baseline.rank, baseline.n_blocks, baseline.loc_coef, baseline.train_batch,
            baseline.sub_batch) == (1024, 4, 0.6, 20, 4)
    assert config("mend").max_steps == 600 and config("mend").normaliser == "exact"


def test_the_releases_sum_token_means_over_length_sorted_sub_batches():
    from editbench.methods.objectives import sub_batch_token_means

    values = torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, 0.0], [3.0, 3.0, 3.0], [4.0, 0.0, 0.0]])
    mask = (values > 0).float()
    lengths = mask.sum(1)  # 2, 1, 3, 1: sorted rows 2, 0, 1, 3
    # sub-batches of 2: rows (2, 0): (9 + 2) / 5; rows (1, 3): (2 + 4) / 2
    assert sub_batch_token_means(values, mask, lengths, 2).item() == pytest.approx(11 / 5 + 3)
    assert sub_batch_token_means(values, mask, lengths, 4).item() == pytest.approx(17 / 7)


@pytest.mark.parametrize("label, clips", [("rledit@release", 6 + 1), ("rledit@paper", 1)])
def test_rledit_release_clips_after_every_step_of_its_sequence(
    label, clips, micro_llama, tmp_path, monkeypatch
):
    method = _method(label, micro_llama, tmp_path)
    trainer = Trainer(method, method.ctx.train_records(), tmp_path / "run")
    calls = {"n": 0}
    clip = torch.nn.utils.clip_grad_norm_

    def counting(*args, **kwargs):
        calls["n"] += 1
        return clip(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", counting)
    method.update_normalisers(method.read_keys_and_grads(method.ctx.train_records()[:4]))
    sequence = trainer._sequence(0)[:6]
    trainer.walk(sequence, train=True, key="k")
    torch.nn.utils.clip_grad_norm_(trainer._trainable(), 1.0)  # the loop's own clip before the step
    assert calls["n"] == clips


def test_rledit_release_walks_one_pass_of_the_train_split_never_cycling(micro_llama, tmp_path):
    """The release's ``islice(loader, 400)`` over a ``drop_last`` loader stops at the loader's end
    (editor/rledit.py:106-111, data/base.py:95-101): 160 train records in batches of 20 make one
    sequence of 8 batches, each record edited once. editbench used to cycle the split 50 times to
    reach 400 batches, which left the normaliser about 50 times too full (issue 28)."""
    from dataclasses import replace

    method = _method("rledit@release", micro_llama, tmp_path)
    method = type(method)(replace(method.config, sequence_length=400, train_batch=20, sub_batch=4),
                          method.ctx)  # the release preset's sizes (the tiny settings shrink them)
    base = method.ctx.train_records()
    records = [replace(base[i % len(base)], uid=f"r{i}", prompt=f"{base[i % len(base)].prompt} {i}")
               for i in range(200)]
    trainer = Trainer(method, records, tmp_path / "run")
    assert len(trainer.train) == 160 and method.config.train_batch == 20
    sequence = trainer._sequence(0)
    assert len(sequence) == 8 and trainer.max_steps == 1
    uids = [r.uid for batch in sequence for r in batch]
    assert len(uids) == len(set(uids)) == 160  # every train record once, none twice
