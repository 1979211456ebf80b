"""RLEdit's training objective: back-tracking reaches earlier updates, the L2 term takes effect."""

import dataclasses
from collections import deque

import torch
from test_hypernet import make_context

from editbench.methods.hypernet.training import Trainer
from editbench.methods.rledit import RLEdit, RLEditConfig

CONFIG = RLEditConfig(edit_lr=1e-2, rank=8, n_blocks=2, train_batch=2, depth=3)


def _trainer(path, tmp_path, config=CONFIG):
    ctx = make_context(path, tmp_path)
    method = RLEdit(config, ctx)
    trainer = Trainer(method, ctx.train_records(), tmp_path / "run")
    trainer._warm_up()
    return method, trainer


def _walk(method, trainer, n_steps):
    """Apply ``n_steps`` batches with gradient, recording the pseudo-gradients the network emits."""
    emitted: list[list[torch.Tensor]] = []
    rule = method.update

    def recording(keys, pseudo_keys, pseudo_grads, lr, log_ridge):
        emitted[-1].append(pseudo_grads)
        return rule(keys, pseudo_keys, pseudo_grads, lr, log_ridge)

    method.update = recording
    window = deque(maxlen=trainer.config.depth)
    for records in trainer._batches(trainer.train, None)[:n_steps]:
        emitted.append([])
        step = trainer._step_data(records, None)
        window.append(step)
        step.shifts = method.shifts(method.read_keys_and_grads(records))
        method.apply_shifts(step.shifts)
    return window, emitted


def test_loss_at_step_t_reaches_the_network_outputs_of_the_last_depth_steps(micro_llama, tmp_path):
    method, trainer = _trainer(micro_llama, tmp_path)
    window, emitted = _walk(method, trainer, n_steps=4)  # steps 0..3, depth 3
    loss, _ = trainer.step_loss(window, None)
    outputs = [e[0] for e in emitted]  # the first module's pseudo-gradients at each step
    grads = torch.autograd.grad(loss, outputs, allow_unused=True)
    assert grads[0] is None  # step t-3 is beyond the back-tracking depth
    for back in (1, 2, 3):  # steps t, t-1, t-2
        assert grads[-back] is not None and grads[-back].abs().sum() > 0, (
            f"no gradient {back - 1} steps back"
        )


def test_without_back_tracking_the_past_gets_no_gradient(micro_llama, tmp_path):
    method, trainer = _trainer(micro_llama, tmp_path, dataclasses.replace(CONFIG, depth=1))
    window, emitted = _walk(method, trainer, n_steps=2)
    loss, _ = trainer.step_loss(window, None)
    grads = torch.autograd.grad(loss, [e[0] for e in emitted], allow_unused=True)
    assert grads[0] is None and grads[1].abs().sum() > 0


def _net_gradient(micro_llama, tmp_path, **changes):
    method, trainer = _trainer(
        micro_llama, tmp_path, dataclasses.replace(CONFIG, depth=1, **changes)
    )
    window, _ = _walk(method, trainer, n_steps=1)
    loss, parts = trainer.step_loss(window, None)
    loss.backward()
    return method.nets[next(iter(method.nets))].blocks[0].shift.grad.clone(), parts


def test_the_l2_penalty_on_updates_takes_effect(micro_llama, tmp_path):
    plain, parts = _net_gradient(micro_llama, tmp_path / "a", reg_coef=0.0)
    penalised, _ = _net_gradient(micro_llama, tmp_path / "b", reg_coef=10.0)
    as_released, _ = _net_gradient(micro_llama, tmp_path / "c", reg_coef=10.0, reg_grad=False)
    assert parts["l2"] > 0
    assert not torch.allclose(plain, penalised)
    assert torch.allclose(plain, as_released)  # the released code's L2 changes nothing


def test_caps_on_train_and_validation_records_sample_a_seeded_subset(micro_llama, tmp_path):
    ctx = make_context(micro_llama, tmp_path)
    given = ctx.train_records()
    config = dataclasses.replace(CONFIG, max_train_records=12, max_val_records=4, val_fraction=0.5)
    first, second = (Trainer(RLEdit(config, ctx), given, tmp_path / "run") for _ in range(2))
    # the share would be 6; the cap holds it to 4
    assert len(first.val) == 4 and len(first.train) == 8
    assert {r.uid for r in first.train + first.val} <= {r.uid for r in given}
    assert [r.uid for r in first.train] == [r.uid for r in second.train]  # seeded
    assert first.records == given  # the training is identified by the records it was given
    uncapped = Trainer(
        RLEdit(dataclasses.replace(config, max_train_records=0), ctx), given, tmp_path / "run"
    )
    assert len(uncapped.train) + len(uncapped.val) == len(given) > 12
