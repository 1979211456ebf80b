"""MEMIT on micro models of both weight layouts (Llama Linear, GPT-2 Conv1D)."""

import pytest
import torch
from test_locate import RECORDS, context

from editbench.core.configs import build_config
from editbench.core.probe import HFProbe
from editbench.core.records import EditRecord, ScoringPair
from editbench.methods import METHODS
from editbench.methods.memit import MEMIT, MEMITConfig

#: Generous settings: a random micro model needs a long, unclamped push to change its argmax.
STRONG = dict(layers=(0, 1), v_steps=60, v_lr=0.5, clamp_norm_factor=20.0, v_weight_decay=0.0,
              kl_factor=0.0, context_prefixes=1, mom2_n_samples=200, mom2_update_weight=1.0)


#: The subject ends the prompt, so the value written at its last token predicts the target itself: a
#: random micro model's attention carries too little from the subject to later positions for a
#: longer prompt (tests/test_locate.py covers subjects inside prompts).
ENDS_WITH_SUBJECT = EditRecord(
    uid="s", prompt="Fact: Kalo Mirve", subject="Kalo Mirve", target_new="in"
)


def test_a_single_memit_edit_makes_the_target_the_argmax(micro_model_path, tmp_path):
    ctx = context(micro_model_path, tmp_path)
    probe = HFProbe(ctx.model, ctx.tokenizer, ctx.device)
    record = ENDS_WITH_SUBJECT
    pair = ScoringPair(record.prompt, record.target_new)
    assert probe.score([pair])[0].token_accuracy < 1.0
    method = MEMIT(MEMITConfig(**STRONG), ctx)
    method.prepare()
    before = {n: p.clone() for n, p in ctx.model.named_parameters()}
    method.apply([record])
    assert probe.score([pair])[0].token_accuracy == 1.0
    changed = {n for n, p in ctx.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(method.edited_parameters())
    assert all(name.endswith(("mlp.down_proj.weight", "mlp.c_proj.weight")) for name in changed)


def test_mom2_weight_trades_edit_strength_for_preservation(micro_llama, tmp_path):
    """The larger lambda, the less the change disturbs what the layer stores and the worse it fits.

    The change minimises ``|dK - R|^2 + lambda tr(d C d^T)``, so along lambda the C-weighted size
    ``tr(d C d^T)`` can only fall and the fit error only grow; the plain Frobenius norm has no such
    law. Lambda is taken relative to ``tr(K K^T) / tr(C)`` (the micro model's second moment is
    about 1e-4 of the keys' own), so every solve is well conditioned in float32: at lambda 1e-3
    the system was singular to rounding and its answer differed between AVX2 and AVX-512 kernels.
    Each step moves lambda a hundredfold; each quantity must move by at least 10% its way.
    """
    ctx = context(micro_llama, tmp_path)
    method = MEMIT(MEMITConfig(**STRONG), ctx)
    method.prepare()
    keys = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    residual = torch.randn(32, 3, generator=torch.Generator().manual_seed(1))
    mom2 = method.stats[method.layers[0]].mom2.double()
    balance = float(torch.trace(keys.double() @ keys.double().T) / torch.trace(mom2))
    weighted, misfit = [], []
    for relative in (1.0, 1e2, 1e4):
        method.config = MEMITConfig(**{**STRONG, "mom2_update_weight": relative * balance})
        delta = method.layer_delta(0, keys, residual).double()
        weighted.append(float(torch.trace(delta @ mom2 @ delta.T)))
        misfit.append(float((delta @ keys.double() - residual.double()).norm()))
    assert weighted[0] > 1.1 * weighted[1] and weighted[1] > 1.1 * weighted[2], weighted
    assert misfit[0] * 1.1 < misfit[1] and misfit[1] * 1.1 < misfit[2], misfit
    # with lambda -> 0 the keys are written exactly (K has full column rank)
    method.config = MEMITConfig(**{**STRONG, "mom2_update_weight": 1e-4 * balance})
    torch.testing.assert_close(
        method.layer_delta(0, keys, residual) @ keys, residual, rtol=1e-3, atol=1e-3
    )


def test_state_dict_round_trip_and_resume_match(micro_gpt2, tmp_path):
    config = MEMITConfig(**{**STRONG, "v_steps": 5})
    first = MEMIT(config, context(micro_gpt2, tmp_path))
    first.prepare()
    first.apply(RECORDS[:1])
    state = first.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    resumed = MEMIT(config, context(micro_gpt2, tmp_path))
    resumed.prepare()
    with torch.no_grad():
        for name in first.edited_parameters():
            resumed.ctx.parameter(name).copy_(first.ctx.parameter(name))
    resumed.load_state_dict(state)
    assert resumed.prefixes == first.prefixes
    first.apply(RECORDS[1:])
    resumed.apply(RECORDS[1:])
    for name in first.edited_parameters():
        torch.testing.assert_close(resumed.ctx.parameter(name), first.ctx.parameter(name))
    other = dict(state, **{"key_stats.samples": state["key_stats.samples"] + 1})
    with pytest.raises(ValueError, match="same corpus"):
        resumed.load_state_dict(other)


def test_published_presets_build(micro_llama):
    for preset, values in MEMIT.presets.items():
        config = build_config(
            MEMITConfig, {k: str(v) for k, v in values.items()}, owner=f"memit@{preset}"
        )
        assert len(config.layers) >= 5 and config.mom2_n_samples == 100_000
    assert MEMIT.presets["gpt2-xl"]["mom2_update_weight"] == 20000
    assert METHODS.get("memit") is MEMIT


def test_layers_must_ascend_and_exist(micro_llama, tmp_path):
    ctx = context(micro_llama, tmp_path)
    with pytest.raises(ValueError, match="ascend"):
        MEMIT(MEMITConfig(layers=(1, 0)), ctx)
    with pytest.raises(ValueError, match="out of range"):
        MEMIT(MEMITConfig(layers=(0, 7)), ctx)
    assert MEMIT(MEMITConfig(layers=(-2, -1)), ctx).layers == (1, 2)
