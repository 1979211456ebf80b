"""Memory-bounded hypernetwork training: a streamed warm-up, a back-tracking window of low-rank
factors, a default cap on train records, and the memory formula checked against measured peaks."""

import dataclasses
import logging
import weakref
from collections import deque

import pytest
import torch
from live_memory import LiveTensors
from test_architectures import meta_model
from test_hypernet import make_context
from torch.func import functional_call

from editbench.core import method as method_module
from editbench.methods.hypernet.memory import ModelShapes, Workload, editing_peak, training_peak
from editbench.methods.hypernet.training import Trainer
from editbench.methods.malmen import MALMEN
from editbench.methods.mend import MEND
from editbench.methods.rledit import RLEdit, RLEditConfig

CONFIG = RLEditConfig(rank=8, n_blocks=2, train_batch=2, depth=3)


def _cached_warm_up(method, trainer):
    """The warm-up as it was before streaming: every batch's rows held at once, then one rule."""
    observed = [
        method.read_keys_and_grads(records) for records in trainer._batches(trainer.train, None)
    ]
    for c in observed:
        method.update_normalisers(c)
    chosen = {}
    for m in method.modules:
        key, index = method.slots[m.name]
        keys = torch.cat([c.keys[m.name] for c in observed])
        grads = torch.cat([c.grads[m.name] for c in observed])
        with torch.no_grad():
            pseudo_keys, _ = method.nets[key](keys, grads, index)
            weight = trainer.pristine[m.parameter].float()
            outputs = keys @ (weight if m.conv1d else weight.T)
            alignment = (keys * pseudo_keys).sum(-1).mean().clamp_min(1e-12)
            chosen[m.name] = float(
                method.config.edit_scale * outputs.pow(2).mean().sqrt() / alignment
            )
    return chosen


def test_streamed_warm_up_equals_the_cached_computation(micro_model_path, tmp_path):
    ctx = make_context(micro_model_path, tmp_path)
    streamed = RLEdit(CONFIG, ctx)
    chosen = Trainer(streamed, ctx.train_records(), tmp_path / "a")._warm_up()
    cached = RLEdit(CONFIG, ctx)
    expected = _cached_warm_up(cached, Trainer(cached, ctx.train_records(), tmp_path / "b"))
    assert chosen.keys() == expected.keys()
    for name, value in expected.items():
        assert abs(chosen[name] - value) <= 1e-5 * abs(value), name
    for key, net in streamed.nets.items():
        for name, buffer in net.normaliser.named_buffers():
            assert torch.allclose(
                buffer, dict(cached.nets[key].normaliser.named_buffers())[name], rtol=1e-10
            )
        index = {
            streamed.slots[m.name][1]: m.name
            for m in streamed.modules
            if streamed.slots[m.name][0] == key
        }
        assert torch.allclose(
            net.lr, torch.tensor([expected[index[i]] for i in range(len(net.lr))]), rtol=1e-5
        )


def _peak_live_reads(micro_llama, tmp_path, n_records):
    """The most keys-and-gradients results alive at once during a warm-up on ``n_records``."""
    ctx = make_context(micro_llama, tmp_path)
    method = RLEdit(CONFIG, ctx)
    live, peak = [0], [0]
    read = method.read_keys_and_grads

    def counted(records):
        result = read(records)
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        weakref.finalize(result, lambda: live.__setitem__(0, live[0] - 1))
        return result

    method.read_keys_and_grads = counted
    trainer = Trainer(method, ctx.train_records()[:n_records], tmp_path / "run")
    trainer._warm_up()
    return peak[0], len(trainer._batches(trainer.train, None))


def test_warm_up_holds_one_batch_of_rows_whatever_the_train_split(micro_llama, tmp_path):
    small, small_batches = _peak_live_reads(micro_llama, tmp_path / "small", 5)
    large, large_batches = _peak_live_reads(micro_llama, tmp_path / "large", 40)
    assert large_batches > 2 * small_batches
    assert small == large == 1


def _window(method, trainer, n_steps):
    """Walk ``n_steps`` batches as ``Trainer.walk`` does; return the window, the last step's
    locality reference and each step's number of answer-token rows."""
    window, rows = deque(maxlen=trainer.config.depth), []
    reference = None
    for records in trainer._batches(trainer.train, None)[:n_steps]:
        observed = method.read_keys_and_grads(records)
        step = trainer._step_data(records, None)
        window.append(step)
        with torch.no_grad():
            reference, _ = trainer._logits([p for s in reversed(window) for p in s.loc_pairs],
                                           {m.name: [] for m in method.modules})
        step.shifts = method.shifts(observed)
        method.apply_shifts(step.shifts)
        rows.append(observed.keys[method.modules[0].name].shape[0])
    return window, reference, rows


def _dense_forward(trainer):
    """The window as it was before: each module's updates made dense, summed, and added to the live
    weight as ``ΔW - stopgrad(ΔW)`` through ``functional_call``."""
    method, model = trainer.method, trainer.model

    def forward(batch, updates):
        weights = {}
        for m in method.modules:
            live = model.get_parameter(m.parameter).detach()
            if updates[m.name]:
                extra = sum(u.dense() - u.dense().detach() for u in updates[m.name])
                live = live + (extra if m.conv1d else extra.T).to(live.dtype)
            weights[m.parameter] = live
        return functional_call(
            model, weights, args=(),
            kwargs={"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        ).logits

    return forward


@pytest.mark.parametrize("method_class", [RLEdit, MEND])
def test_low_rank_window_gives_the_dense_losses_and_gradients(
    micro_model_path, tmp_path, method_class
):
    ctx = make_context(micro_model_path, tmp_path)
    config = dataclasses.replace(CONFIG, edit_lr=1e-2, reg_coef=1.0)
    method = method_class(method_class.Config(
        **{f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    ), ctx)
    trainer = Trainer(method, ctx.train_records(), tmp_path / "run")
    trainer._warm_up()
    window, reference, _ = _window(method, trainer, n_steps=4)
    parameters = [p for net in method.nets.values() for p in net.parameters()]
    factored, parts = trainer.step_loss(window, reference)
    factored_grads = torch.autograd.grad(factored, parameters, retain_graph=True, allow_unused=True)
    trainer._forward = _dense_forward(trainer)
    dense, dense_parts = trainer.step_loss(window, reference)
    dense_grads = torch.autograd.grad(dense, parameters, allow_unused=True)
    assert parts["l2"] > 0 and parts["loc"] > 0
    assert torch.allclose(factored, dense, rtol=1e-6, atol=0)
    for name in parts:
        assert parts[name] == pytest.approx(dense_parts[name], rel=1e-5)
    scale = max(float(g.abs().max()) for g in dense_grads if g is not None)
    assert scale > 0
    for a, b in zip(factored_grads, dense_grads):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-6 * scale)


def test_the_window_holds_rows_times_key_plus_value_numbers(micro_llama, tmp_path):
    ctx = make_context(micro_llama, tmp_path)
    method = RLEdit(dataclasses.replace(CONFIG, edit_lr=1e-2), ctx)
    trainer = Trainer(method, ctx.train_records(), tmp_path / "run")
    trainer._warm_up()
    window, _, rows = _window(method, trainer, n_steps=4)
    assert len(window) == 3
    for step, n in zip(window, rows[-3:]):
        for m in method.modules:
            assert n < m.key_size  # the factored form
            assert step.shifts[m.name].nbytes() == n * (m.key_size + m.value_size) * 4
            assert step.shifts[m.name].nbytes() < m.key_size * m.value_size * 4


def test_large_models_train_on_a_capped_sample_by_default(
    micro_llama, tmp_path, monkeypatch, caplog
):
    # Llama-3-8B
    assert CONFIG.train_record_cap(8_030_000_000)[0] == method_module.LARGE_MODEL_TRAIN_RECORDS
    assert "8.0B" in CONFIG.train_record_cap(8_030_000_000)[1]
    assert CONFIG.train_record_cap(124_000_000)[0] == 0  # GPT-2 small: all records
    # said: all
    assert dataclasses.replace(CONFIG, max_train_records=0).train_record_cap(8_030_000_000)[0] == 0
    assert dataclasses.replace(CONFIG, max_train_records=500).train_record_cap(10**6)[0] == 500
    ctx = make_context(micro_llama, tmp_path)
    given = ctx.train_records()
    monkeypatch.setattr(method_module, "LARGE_MODEL_TRAIN_RECORDS", 6)
    assert len(Trainer(RLEdit(CONFIG, ctx), given, tmp_path / "a").records) == len(given)
    n_parameters = sum(p.numel() for p in ctx.model.parameters())
    # the micro model is "large"
    monkeypatch.setattr(method_module, "LARGE_MODEL_PARAMETERS", n_parameters)
    with caplog.at_level(logging.INFO):
        capped = Trainer(RLEdit(CONFIG, ctx), given, tmp_path / "b")
    assert len(capped.train) + len(capped.val) == 6 < len(given)
    assert (
        "training on 6 of the" in caplog.text
        and "max_train_records=0 trains on all" in caplog.text
    )


def _widths(ctx, records) -> tuple[int, int, float]:
    """Padded widths of the paraphrases (with the edit prompts) and of the unrelated prompts over
    ``records``, and their mean answer tokens."""
    encode = ctx.encoder.encode
    edits = [encode(r.prompt, r.target_new) for r in records]
    gen = edits + [encode(p, r.target_new) for r in records for p in r.paraphrases]
    loc = [encode(n.prompt, n.answer) for r in records for n in r.neighbours]
    return (max(len(e.ids) for e in gen), max(len(e.ids) for e in loc),
            sum(e.n_target for e in edits) / len(edits))


@pytest.mark.parametrize(("family", "method_class"), [
    ("llama", RLEdit),
    ("gpt2", RLEdit),
    ("llama", MALMEN),
    ("llama", MEND),
])
def test_memory_formula_is_within_a_quarter_of_the_measured_peak(
    family, method_class, micro_llama, micro_gpt2, tmp_path
):
    """Live tensor storages (``LiveTensors``) over a whole training run and over one batch of edits,
    against ``training_peak`` and ``editing_peak`` for the batches the run walked."""
    ctx = make_context({"llama": micro_llama, "gpt2": micro_gpt2}[family], tmp_path)
    schedule = {"depth": 3, "sequence_length": 4} if method_class is RLEdit else {}
    config = method_class.Config(max_steps=2, val_every=1, patience=5, train_batch=4, **schedule)
    existing = [*ctx.model.parameters(), *ctx.model.buffers()]
    with LiveTensors(existing) as training:
        method = method_class(config, ctx)
        trainer = Trainer(method, ctx.train_records(), tmp_path / "run")
        trainer.backward_by_batch = True  # as on a large model, which the formula is for
        trainer.run()
    walked = [
        r for step in range(trainer.max_steps) for batch in trainer._sequence(step) for r in batch
    ]
    width, neighbour_width, answers = _widths(ctx, walked)
    shapes = ModelShapes.of(ctx.model, method.config)
    workload = Workload(width, round(answers), neighbour_tokens_per_record=neighbour_width)
    predicted = training_peak(shapes, method.config, workload).total
    assert 0.75 <= predicted / training.total_peak <= 1.25, (predicted, training.total_peak)

    edits = ctx.train_records()[:8]
    with LiveTensors([*existing, *method.nets.parameters(), *method.nets.buffers()]) as editing:
        method.apply(edits)
    encoded = [ctx.encoder.encode(r.prompt, r.target_new) for r in edits]
    workload = Workload(
        max(len(e.ids) for e in encoded), round(sum(e.n_target for e in encoded) / len(edits)),
        edit_batch=len(edits)
    )
    predicted = editing_peak(shapes, method.config, workload).total
    assert 0.75 <= predicted / editing.total_peak <= 1.25, (predicted, editing.total_peak)


def test_back_propagating_batch_by_batch_gives_the_whole_loss_gradient(micro_llama, tmp_path):
    ctx = make_context(micro_llama, tmp_path)
    method = RLEdit(dataclasses.replace(CONFIG, edit_lr=1e-2, reg_coef=1.0), ctx)
    trainer = Trainer(method, ctx.train_records(), tmp_path / "run")
    trainer._warm_up()
    window, reference, _ = _window(method, trainer, n_steps=4)
    parameters = [p for net in method.nets.values() for p in net.parameters()]
    whole, parts = trainer.step_loss(window, reference)
    expected = torch.autograd.grad(whole, parameters, retain_graph=True)
    chunked, chunked_parts = trainer.step_loss(window, reference, backward=True)
    assert not chunked.requires_grad and torch.allclose(chunked, whole.detach(), rtol=1e-6)
    assert chunked_parts == pytest.approx(parts, rel=1e-6)
    scale = max(float(g.abs().max()) for g in expected)
    assert scale > 0
    for parameter, grad in zip(parameters, expected):
        assert torch.allclose(parameter.grad, grad, rtol=1e-4, atol=1e-6 * scale), parameter.shape


@pytest.mark.parametrize("method_class", [RLEdit, MALMEN, MEND])
def test_llama_3_8b_in_bf16_trains_and_edits_within_80_gb_by_the_formula(method_class):
    """The plan for the issue's model: each method's defaults with its Llama-3-8B modules (gate and
    up of layers 22-30), ZsRE-sized records (32 tokens, 6 answer tokens), batches of 100 edits."""
    model = meta_model("llama-3-8b")
    config = method_class.Config(**method_class.presets["llama-3-8b"])
    shapes = ModelShapes.of(model, config, torch.bfloat16)
    assert shapes.n_parameters == 8_030_261_248 and len(shapes.edited) == 18
    workload = Workload(tokens_per_record=32, answer_tokens_per_record=6, edit_batch=100)
    training, editing = (
        training_peak(shapes, config, workload), editing_peak(shapes, config, workload)
    )
    assert training.terms["weights"] == 2 * shapes.n_parameters
    assert 16e9 < training.total < 80e9 and 16e9 < editing.total < 80e9
