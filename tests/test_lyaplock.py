"""LyapLock (issue 33) on micro models: the queue moves by the release's rule, the first batch is
MEMIT's update, the update is the release's normal equations, a longer queue keeps the preserved
keys' outputs closer, an edit raises its target's probability, and the queue resumes."""

import pytest
import torch
from test_alphaedit import PRESERVED
from test_locate import RECORDS, context, token_keys
from test_memit import ENDS_WITH_SUBJECT, STRONG

from editbench.core.configs import build_config
from editbench.core.probe import HFProbe
from editbench.core.records import ScoringPair
from editbench.methods import METHODS
from editbench.methods.lyaplock import LyapLock, LyapLockConfig, preservation_loss, queue_step
from editbench.methods.memit import MEMIT, MEMITConfig

SMALL = {**STRONG, "v_steps": 8}


def release_queue(z, a, b, zmax, loss, alpha, d_base):
    """The release's rule, written out (lyaplock_main.py:345-347):
    Z = max(Z + a * (D - alpha * D_base) + b, zmax)."""
    return max(z + a * (loss - alpha * d_base) + b, zmax)


def release_loss(k0k0, w, v0k0, v0v0):
    """The release's compute_fro_by_trace (lyaplock_main.py:68-69), W as (d_out, d_in)."""
    return float((k0k0 @ w.T @ w).trace() - 2 * (v0k0 @ w.T).trace() + v0v0.trace())


def test_queue_step_is_the_release_rule_on_numbers():
    cases = [(2.0, 0.5, 0.0, 1.0, 30.0, 60.0, 1.0),   # under budget: falls to the floor
             (2.0, 0.5, 0.0, 1.0, 90.0, 60.0, 1.0),   # over budget: grows by a * excess
             (5.0, 0.1, 0.3, 0.0, 61.0, 60.0, 1.0),   # offset b counts
             (1.0, 1.0, 0.0, 4.0, 60.0, 60.0, 1.0)]   # never below the floor
    for z, a, b, zmax, loss, alpha, base in cases:
        assert queue_step(z, loss, alpha * base, a, b, zmax) == pytest.approx(
            release_queue(z, a, b, zmax, loss, alpha, base))
    assert queue_step(2.0, 90.0, 60.0, 0.5, 0.0, 1.0) == pytest.approx(17.0)
    assert queue_step(2.0, 30.0, 60.0, 0.5, 0.0, 1.0) == 1.0


def _method(ctx, **extra):
    method = LyapLock(LyapLockConfig(**{**SMALL, **extra}), ctx)
    method.prepare()
    return method


def test_the_queue_in_a_run_follows_the_release(micro_llama, tmp_path):
    """Two batches: D_base is the first batch's loss, Z starts at sqrt(alpha D_base) with step
    1/sqrt(alpha D_base), and each batch moves Z by the release's rule, with the loss computed as
    the release does from V0 = W0 K0 statistics."""
    ctx = context(micro_llama, tmp_path)
    alpha = 0.5  # tight, so the second batch runs over budget and the queue grows
    method = _method(ctx, alpha=alpha)
    originals = [method.weight(i).double().clone() for i in range(len(method.layers))]
    method.apply(RECORDS[:1])
    losses = []
    for i, layer in enumerate(method.layers):
        k0k0 = method.stats[layer].mom2.double()
        w0 = originals[i]
        loss = release_loss(k0k0, method.weight(i).double(), w0 @ k0k0, w0 @ k0k0 @ w0.T)
        losses.append(loss)
        z, a, zmax, base, last = method.queue[i].tolist()
        assert loss > 0 and base == pytest.approx(loss, rel=1e-4) and last == base
        scale = (alpha * loss) ** 0.5
        assert a == pytest.approx(1 / scale, rel=1e-4) and zmax == pytest.approx(scale, rel=1e-4)
        assert z == pytest.approx(release_queue(scale, 1 / scale, 0.0, scale, loss, alpha, loss),
                                  rel=1e-4)
        assert method.preservation_weight(i) == pytest.approx(a * z)
    before = method.queue.clone()
    method.apply(RECORDS[1:])
    for i, layer in enumerate(method.layers):
        k0k0 = method.stats[layer].mom2.double()
        w0 = originals[i]
        loss = release_loss(k0k0, method.weight(i).double(), w0 @ k0k0, w0 @ k0k0 @ w0.T)
        z0, a, zmax, base, _ = before[i].tolist()
        assert method.queue[i, 0].item() == pytest.approx(
            release_queue(z0, a, 0.0, zmax, loss, alpha, base), rel=1e-3)
        assert loss > alpha * base and method.queue[i, 0] > before[i, 0]  # over budget: it grew


def test_the_first_batch_is_memits_update(micro_gpt2, tmp_path):
    """Before any queue exists (W = W0, no earlier keys, a Z = 1) the update is MEMIT's; the two
    solve the same system in a different order, so float32 rounding parts them by about 1e-4 of
    the change (measured), far below a different update's."""
    settings = {**SMALL, "mom2_update_weight": 100.0}  # well conditioned in float32
    memit = MEMIT(MEMITConfig(**settings), context(micro_gpt2, tmp_path))
    memit.prepare()
    originals = {name: memit.ctx.parameter(name).clone() for name in memit.edited_parameters()}
    memit.apply(RECORDS)
    lyap = LyapLock(LyapLockConfig(**settings), context(micro_gpt2, tmp_path))
    lyap.prepare()
    lyap.apply(RECORDS)
    for name, original in originals.items():
        ours = lyap.ctx.parameter(name) - original
        theirs = memit.ctx.parameter(name) - original
        assert float(theirs.norm()) > 1.0
        assert float((ours - theirs).norm() / theirs.norm()) < 2e-3


def test_the_update_solves_the_releases_normal_equations(micro_llama, tmp_path):
    """After a batch, a layer's change equals the release's left @ inv(A) (lyaplock_main.py:
    265-281), transcribed in float64 from its own quantities: V, a Z, lambda, V0 K0^T = W0 C0, and
    the earlier keys' sums."""
    ctx = context(micro_llama, tmp_path)
    # lambda large enough that A is well conditioned in float32 (the micro model's E[k k^T] is
    # about 1e-4 of a key's own square)
    method = _method(ctx, lyapunov_v=2.0, mom2_update_weight=1000.0)
    w0 = method.weight(0).double().clone()
    method.apply(RECORDS[:1])
    method.queue[0, 0] *= 7  # a longer queue than one batch builds
    gen = torch.Generator().manual_seed(3)
    keys = torch.randn(64, 2, generator=gen)
    resid = torch.randn(32, 2, generator=gen)
    v, q, lam = 2.0, method.preservation_weight(0), 1000.0
    w = method.weight(0).double()
    c0 = method.stats[0].mom2.double()
    pre_vk, pre_kk = method.edited_vk[0].double(), method.edited_kk[0].double()
    k, r = keys.double(), resid.double()
    left = v * (r @ k.T) + q * lam * (w0 @ c0 - w @ c0) + v * (pre_vk - w @ pre_kk)
    big_a = v * k @ k.T + q * lam * c0 + v * pre_kk
    expected = left @ torch.linalg.inv(big_a).T
    got = method.layer_delta(0, keys, resid).double()
    assert float((got - expected).norm() / expected.norm()) < 1e-3


def test_a_longer_queue_moves_the_preserved_keys_outputs_less(micro_llama, tmp_path):
    """The change minimises edit misfit + q lambda PL, so the preserved keys' outputs (the
    corpus's own token keys) can only end closer to the unedited ones as q grows; each hundredfold
    step must bring them at least 10% closer."""
    ctx = context(micro_llama, tmp_path, texts=PRESERVED)
    method = _method(ctx, mom2_update_weight=1e-3)
    w0 = method.weight(0).clone()
    preserved = token_keys(ctx, method.modules[0], PRESERVED).T  # (d_in, tokens)
    method.apply(RECORDS[:1])
    gen = torch.Generator().manual_seed(0)
    keys = torch.randn(64, 3, generator=gen)
    resid = torch.randn(32, 3, generator=gen)
    moved = []
    z = method.queue[0, 0].item()
    for factor in (1.0, 1e2, 1e4):
        method.queue[0, 0] = z * factor
        delta = method.layer_delta(0, keys, resid)
        weight = method.weight(0) + delta
        moved.append(float(((weight - w0) @ preserved).norm()))
    assert moved[0] > 1.1 * moved[1] and moved[1] > 1.1 * moved[2], moved


def test_an_edit_raises_its_targets_probability(micro_model_path, tmp_path):
    ctx = context(micro_model_path, tmp_path)
    probe = HFProbe(ctx.model, ctx.tokenizer, ctx.device)
    record = ENDS_WITH_SUBJECT
    pair = ScoringPair(record.prompt, record.target_new)
    before = probe.score([pair])[0]
    method = LyapLock(LyapLockConfig(**STRONG), ctx)
    method.prepare()
    method.apply([record])
    method.apply([RECORDS[1]])  # a second batch, with the queue in the objective, keeps it
    after = probe.score([pair])[0]
    # a random micro model's distribution is flat: the target gains about 0.6 nats to become the
    # argmax (measured on both layouts)
    assert before.token_accuracy == 0.0
    assert after.logprob > before.logprob + 0.25 and after.token_accuracy == 1.0


def test_state_round_trip_resumes_the_queue(micro_gpt2, tmp_path):
    config = LyapLockConfig(**SMALL, alpha=0.5)
    first = LyapLock(config, context(micro_gpt2, tmp_path))
    first.prepare()
    first.apply(RECORDS[:1])
    state = first.state_dict()
    assert {"queue", "turns", "drift.0", "edited_vk.1", "edited_kk.1"} <= set(state)
    resumed = LyapLock(config, context(micro_gpt2, tmp_path))
    resumed.prepare()
    with torch.no_grad():
        for name in first.edited_parameters():
            resumed.ctx.parameter(name).copy_(first.ctx.parameter(name))
    resumed.load_state_dict(state)
    assert resumed.turns == 1 and torch.equal(resumed.queue, first.queue)
    first.apply(RECORDS[1:])
    resumed.apply(RECORDS[1:])
    torch.testing.assert_close(resumed.queue, first.queue)
    for name in first.edited_parameters():
        torch.testing.assert_close(resumed.ctx.parameter(name), first.ctx.parameter(name))
    # without the queue the second batch would be another first batch: a different edit
    fresh = LyapLock(config, context(micro_gpt2, tmp_path))
    fresh.prepare()
    with torch.no_grad():
        for name in first.edited_parameters():
            fresh.ctx.parameter(name).copy_(resumed.ctx.parameter(name))
    with pytest.raises(ValueError, match="lacks queue"):
        fresh.load_state_dict({k: v for k, v in state.items() if k != "queue"})


def test_preservation_loss_is_the_trace_form():
    gen = torch.Generator().manual_seed(0)
    drift = torch.randn(5, 7, generator=gen)
    keys = torch.randn(7, 40, generator=gen)
    mom2 = keys @ keys.T / 40
    assert preservation_loss(drift, mom2) == pytest.approx(
        float((drift @ keys).pow(2).sum() / 40), rel=1e-5)


def test_published_presets_and_bad_settings():
    assert METHODS.get("lyaplock") is LyapLock
    assert {"gpt2-xl", "gpt-j-6b", "llama-3-8b"} <= set(LyapLock.presets)
    def preset(name):
        values = {k: str(v) for k, v in LyapLock.presets[name].items()}
        return build_config(LyapLockConfig, values, owner=f"lyaplock@{name}")

    llama = preset("llama3-8b")
    assert llama.layers == (4, 5, 6, 7, 8) and llama.v_lr == 0.1
    assert llama.mom2_update_weight == 1000 and llama.alpha == 60 and llama.lyapunov_v == 1
    gptj = preset("gpt-j-6b")
    assert gptj.layers == (3, 4, 5, 6, 7, 8) and gptj.mom2_update_weight == 1000
    with pytest.raises(ValueError, match="alpha"):
        LyapLockConfig(alpha=0)
    with pytest.raises(ValueError, match="queue_floor"):
        LyapLockConfig(queue_floor=-1)


def test_the_default_run_leaves_it_out_and_says_why(caplog):
    """It costs the default run about 17-21 s (docs/benchmarks.md), over its budget's room."""
    import logging

    from editbench.harness.plan.resolve import default_methods

    with caplog.at_level(logging.INFO):
        methods = default_methods()
    assert "lyaplock" not in methods and "memit" in methods
    assert "--methods lyaplock" in caplog.text
