"""HiEdit (issue 33): what its layer selection must do, beyond RLEdit.

Property tests on micro models: the gate keeps exactly ``select`` modules per edit batch and leaves
the others' weights bit-identical; the choice depends on the edit; with every module kept it is
RLEdit; the scores get the gradient of each module's update on the loss (straight-through), or
only the L2 term's as in the release. A transcription of the release's gate and masked MALMEN
update (yangfanww/hiedit 1d76ab4, ``nets.py``, ``editor/hieditmm.py``) on a tiny case, and a
killed run resumed.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque

import pytest
import torch
from test_hypernet import make_context

from editbench.core.configs import build_config
from editbench.methods import METHODS
from editbench.methods.hiedit import (
    MODEL_PRESETS,
    HiEdit,
    HiEditConfig,
    LayerGate,
    straight_through_top_k,
)
from editbench.methods.hypernet.storage import load_editor
from editbench.methods.hypernet.training import Trainer
from editbench.methods.rledit import RLEdit, RLEditConfig

SMALL = dict(edit_lr=1e-2, rank=8, n_blocks=2, train_batch=2, depth=3)
CONFIG = HiEditConfig(**SMALL, gate_hidden=16)


def _method(path, tmp_path, config=CONFIG, cls=HiEdit):
    ctx = make_context(path, tmp_path)
    method = cls(config, ctx)
    trainer = Trainer(method, ctx.train_records(), tmp_path / "run")
    trainer._warm_up()  # fills the normalisers
    return method, trainer


def _weights(method):
    return {m.name: method.ctx.model.get_parameter(m.parameter).detach().clone()
            for m in method.modules}


def test_the_gate_keeps_select_modules_and_leaves_the_rest_bit_identical(micro_model_path,
                                                                        tmp_path):
    config = dataclasses.replace(CONFIG, modules="mlp_in_out")  # 3 per layer: 6 on llama, 4 gpt2
    method, trainer = _method(micro_model_path, tmp_path, config)
    n = len(method.modules)
    assert method.n_select == math.ceil(n / 2)
    for records in trainer._batches(trainer.train, None)[:3]:
        before = _weights(method)
        method.apply(records)
        after = _weights(method)
        changed = {name for name in before if not torch.equal(before[name], after[name])}
        assert changed == set(method.last_selection)
        assert len(changed) == method.n_select


def test_the_choice_follows_the_edit(micro_llama, tmp_path):
    """Different facts get different modules from one untrained gate, and the kept ones are the
    gate's top scores."""
    method, trainer = _method(micro_llama, tmp_path, dataclasses.replace(CONFIG, train_batch=1))
    choices = set()
    for records in trainer._batches(trainer.train, None)[:30]:
        observed = method.read_keys_and_grads(records)
        with torch.no_grad():
            scores = method.scores(observed)
            method.shifts(observed)
        top = {method.modules[i].name for i in scores.topk(method.n_select).indices.tolist()}
        assert set(method.last_selection) == top
        choices.add(tuple(method.last_selection))
    assert len(choices) >= 2


def test_keeping_every_module_is_rledit(micro_llama, tmp_path):
    hiedit, trainer = _method(micro_llama, tmp_path / "h", dataclasses.replace(CONFIG, select=4))
    rledit, _ = _method(micro_llama, tmp_path / "r", RLEditConfig(**SMALL), RLEdit)
    records = trainer._batches(trainer.train, None)[0]
    deltas = []
    for method in (hiedit, rledit):
        before = _weights(method)
        method.apply(records)
        deltas.append({k: v - before[k] for k, v in _weights(method).items()})
    for name in deltas[0]:
        assert deltas[0][name].abs().max() > 0
        torch.testing.assert_close(deltas[0][name], deltas[1][name], rtol=0, atol=0)


def _step_loss_and_mask(method, trainer, records):
    """One training step's loss with the mask kept as a leaf the test can differentiate."""
    captured = {}
    original = straight_through_top_k

    def spy(scores, k):
        mask = original(scores, k)
        captured["scores"] = scores
        return mask

    import editbench.methods.hiedit as module
    module.straight_through_top_k = spy
    try:
        step = trainer._step_data(records, None)
        step.shifts = method.shifts(method.read_keys_and_grads(records))
    finally:
        module.straight_through_top_k = original
    return step, captured["scores"]


def test_the_scores_learn_what_each_module_update_does_to_the_loss(micro_llama, tmp_path):
    """Straight-through: d loss / d score_m is the derivative of the paraphrase loss with respect
    to scaling module m's update, for kept and dropped modules alike (finite differences)."""
    method, trainer = _method(micro_llama, tmp_path)
    records = trainer._batches(trainer.train, None)[0]
    unmasked = {}
    with torch.no_grad():  # every module's own update on the model before the step
        observed = method.read_keys_and_grads(records)
        for m in method.modules:
            key, index = method.slots[m.name]
            net = method.nets[key]
            pk, pg = net(observed.keys[m.name], observed.grads[m.name], index)
            unmasked[m.name] = method.update(observed.keys[m.name], pk, pg, net.lr[index],
                                             net.log_ridge[index]).dense()
    step, scores = _step_loss_and_mask(method, trainer, records)
    method.apply_shifts(step.shifts)
    loss, _ = trainer.step_loss(deque([step]), None)
    (grad,) = torch.autograd.grad(loss, scores)
    kept = set(method.last_selection)
    eps = 1e-2
    for i, m in enumerate(method.modules):
        losses = []
        for sign in (1, -1):
            method.ctx.add_to_weight(m.name, (sign * eps * unmasked[m.name]).T)
            with torch.no_grad():
                losses.append(float(trainer.step_loss(deque([step]), None)[0]))
            method.ctx.add_to_weight(m.name, (-sign * eps * unmasked[m.name]).T)
        numeric = (losses[0] - losses[1]) / (2 * eps)
        # the L2 term's share: 2 m ||dW||^2 reg (zero for a dropped module)
        numeric += 2 * (m.name in kept) * CONFIG.reg_coef * float(
            unmasked[m.name].pow(2).sum())
        assert abs(numeric) > 1e-4
        assert float(grad[i]) == pytest.approx(numeric, rel=0.05, abs=1e-5)


def test_the_release_signal_trains_the_gate_on_the_l2_term_alone(micro_llama, tmp_path):
    config = dataclasses.replace(CONFIG, gate_grad="l2", reg_coef=1.0)
    method, trainer = _method(micro_llama, tmp_path, config)
    records = trainer._batches(trainer.train, None)[0]
    step, scores = _step_loss_and_mask(method, trainer, records)
    method.apply_shifts(step.shifts)
    loss, _ = trainer.step_loss(deque([step]), None)
    l2 = sum(s.squared_norm() for s in step.shifts.values())
    (from_losses,) = torch.autograd.grad(loss - config.reg_coef * l2, scores, retain_graph=True,
                                         allow_unused=True)
    assert from_losses is None or not from_losses.any()  # the paraphrases do not reach the gate
    (grad,) = torch.autograd.grad(l2, scores, retain_graph=True)
    for i, m in enumerate(method.modules):
        expected = 2 * float(step.shifts[m.name].detach().squared_norm())  # 2 m ||dW||^2, m = 1
        assert float(grad[i]) == pytest.approx(expected, rel=1e-4)
    low = [p for n, p in method.nets.named_parameters() if ".gate." not in f".{n}"]
    assert all(g is None for g in torch.autograd.grad(l2, low, allow_unused=True))


def _release_gate(gate: LayerGate, rows, slots, k):
    """The release's HiNet (``nets.py:113-218``), written out: Linear, clamp, per-module Embedding
    scale and shift, concatenation over modules along the features, mean over rows, Linear gate,
    top-k and ``(onehot - s).detach() + s``."""
    hidden = []
    for z, (key, index) in zip(rows, slots):
        enc = gate.encoders[key]
        linear = torch.nn.Linear(*enc.weight.shape)
        linear.weight.data, linear.bias.data = enc.weight.T.clone(), enc.bias.clone()
        scale = torch.nn.Embedding.from_pretrained(enc.scale.detach().clone())
        shift = torch.nn.Embedding.from_pretrained(enc.shift.detach().clone())
        idx = torch.LongTensor([index])
        hidden.append(scale(idx) * linear(z).clamp(0) + shift(idx))
    out = torch.nn.Linear(*gate.weight.shape)
    out.weight.data, out.bias.data = gate.weight.T.clone(), gate.bias.clone()
    s = out(torch.cat(hidden, -1).mean(0))
    onehot = torch.zeros_like(s).scatter_(-1, torch.topk(s, k=k, dim=-1)[1], 1)
    return s, (onehot - s).detach() + s


def test_gate_and_masked_update_match_a_transcription_of_the_release():
    """Three modules of two shapes, five rows: scores, mask and the masked MALMEN solve of
    ``editor/hieditmm.py:291-309`` (``(KᵀK + e^λ I)⁻¹ Kᵀ V`` times the mask)."""
    gen = torch.Generator().manual_seed(0)
    shapes = {"6x4": 10, "5x3": 8}
    gate = LayerGate(shapes, {"6x4": 2, "5x3": 1}, 3, 7, gen)
    with torch.no_grad():
        for enc in gate.encoders.values():
            enc.scale.add_(torch.rand(enc.scale.shape, generator=gen))
            enc.shift.add_(torch.rand(enc.shift.shape, generator=gen) - 0.5)
    slots = [("6x4", 0), ("5x3", 0), ("6x4", 1)]
    rows = [torch.randn(5, shapes[key], generator=gen) for key, _ in slots]
    scores = gate(rows, slots)
    mask = straight_through_top_k(scores, 2)
    release_scores, release_mask = _release_gate(gate, rows, slots, 2)
    torch.testing.assert_close(scores, release_scores, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mask, release_mask, rtol=0, atol=1e-6)
    assert sorted(mask.tolist()) == [0.0, 1.0, 1.0]
    # the masked solve, one module: keys K, pseudo keys and gradients, lr, lambda
    keys, pk, pg = (torch.randn(5, n, generator=gen) for n in (6, 6, 4))
    lr, lam = torch.tensor(0.3), torch.tensor(0.5)
    values = -lr * (keys * pk).sum(-1, keepdim=True) * pg
    release = torch.linalg.solve(keys.T @ keys + lam.exp() * torch.eye(6), keys.T @ values)
    for i in range(3):
        ours = HiEdit.update.__get__(
            type("M", (), {"config": HiEditConfig(rule="malmen")})())(keys, pk, pg, lr, lam)
        torch.testing.assert_close(ours.dense() * mask[i], release * release_mask[i], rtol=1e-4,
                                   atol=1e-5)


def test_training_moves_the_gate_and_the_saved_editor_keeps_it(micro_llama, tmp_path):
    config = dataclasses.replace(CONFIG, max_steps=2, val_every=1, sequence_length=3,
                                 select_best=False)
    ctx = make_context(micro_llama, tmp_path)
    method = HiEdit(config, ctx)
    initial = {n: p.detach().clone() for n, p in method.gate.named_parameters()}
    method.fit(tmp_path / "editor", ctx.train_records())
    trained = {n: p.detach().clone() for n, p in method.gate.named_parameters()}
    assert any(not torch.equal(initial[n], trained[n]) for n in initial)
    fresh = HiEdit(config, make_context(micro_llama, tmp_path))
    load_editor(fresh, tmp_path / "editor")
    for n, p in fresh.gate.named_parameters():
        assert torch.equal(p, trained[n]), n


def test_presets_and_bad_settings(micro_llama, tmp_path):
    assert METHODS.get("hiedit") is HiEdit
    assert set(MODEL_PRESETS) <= set(HiEdit.presets)

    def preset(name):
        values = {k: ",".join(v) if isinstance(v, tuple) else str(v)
                  for k, v in HiEdit.presets[name].items()}
        return build_config(HiEditConfig, values, owner=f"hiedit@{name}")

    llama = preset("llama-3-8b")
    assert len(llama.module_names) == 12 and llama.select == 6
    assert llama.module_names[0] == "model.layers.11.mlp.gate_proj"
    assert llama.module_names[-1] == "model.layers.24.mlp.up_proj"
    assert len(preset("gemma-2-9b").module_names) == 18
    release = preset("release")
    assert (release.rule, release.rank, release.n_blocks, release.loc_coef) == ("malmen", 1024, 4,
                                                                               0.6)
    assert release.train_batch == 1 and release.gate_grad == "l2" and release.gate_hidden == 256
    mend = preset("release-mend")
    assert (mend.rule, mend.rank, mend.reg_coef, mend.tokens) == ("mend", 1920, 1e-2, "all")
    for field, value in (("select", -1), ("rule", "sum"), ("gate_grad", "all"),
                         ("gate_hidden", 0)):
        with pytest.raises(ValueError, match=field):
            HiEditConfig(**{field: value})
    with pytest.raises(ValueError, match="select=9"):
        HiEdit(dataclasses.replace(CONFIG, select=9), make_context(micro_llama, tmp_path))


def test_an_interrupted_training_resumes_to_the_uninterrupted_result(micro_llama, tmp_path,
                                                                     monkeypatch):
    """The gate's weights and Adam moments go through the training state with the networks: a
    training killed between its checkpoints and rerun saves the editor of an uninterrupted one."""
    from safetensors.torch import load_file
    from test_train import FAST, Interrupted, _fit

    config = HiEditConfig(**FAST, n_blocks=2, sequence_length=3, depth=2, gate_hidden=8)
    _fit(micro_llama, tmp_path / "straight" / "ed", HiEdit, config)
    broken = tmp_path / "broken" / "ed"
    with pytest.raises(Interrupted):
        _fit(micro_llama, broken, HiEdit, config, interrupt_after=3, monkeypatch=monkeypatch)
    assert [p.name for p in broken.glob("state-*")] == ["state-000002"]
    _fit(micro_llama, broken, HiEdit, config)
    straight = load_file(tmp_path / "straight" / "ed" / "editor.safetensors")
    resumed = load_file(broken / "editor.safetensors")
    assert any(".gate." in k for k in straight) and straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_the_default_run_leaves_it_out_and_says_why(caplog):
    import logging

    from editbench.harness.plan.resolve import default_methods

    with caplog.at_level(logging.INFO):
        methods = default_methods()
    assert "hiedit" not in methods and "rledit" in methods
    assert "--methods hiedit" in caplog.text
