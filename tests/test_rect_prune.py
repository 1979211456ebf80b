"""RECT and PRUNE on MEMIT's update (issue 33): what each must do to the update, each against a
transcription of its release's math on a tiny case, and that the edit still lands on micro models of
both weight layouts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_locate import RECORDS, context
from test_memit import ENDS_WITH_SUBJECT, STRONG

from editbench.core.configs import build_config
from editbench.core.probe import HFProbe
from editbench.core.records import ScoringPair
from editbench.methods import METHODS
from editbench.methods.memit import MEMIT, MEMITConfig
from editbench.methods.prune import (
    PRUNE,
    REDUCE_TYPES,
    PRUNEConfig,
    restrain_singular_values,
    restrained_perturbation,
)
from editbench.methods.rect import RECT, RECTConfig, keep_largest_relative_changes


def release_rect(delta: np.ndarray, weight: np.ndarray, zero_share: float) -> np.ndarray:
    """Transcribed from the RECT release (Model-Editing-Hurt 8f8d4dc, rome_main.py lines 26-33 and
    77-79): relative change ``|delta / w|``, the ``int(n * share)`` smallest set to zero."""
    change = np.abs(np.divide(delta, weight)).flatten()
    out = delta.flatten().copy()
    zeroed = int(change.size * zero_share)
    out[np.argpartition(change, zeroed)[:zeroed]] = 0
    return out.reshape(delta.shape)


def release_prune(weight: np.ndarray, delta: np.ndarray, base: float | None) -> np.ndarray:
    """Transcribed from the PRUNE release (PRUNE 046c2a6, bi_editor_loadw.py: func_linear, func_log,
    func_logn at lines 48-68; the rebuild at lines 208-253)."""
    u, s, v = np.linalg.svd(delta, full_matrices=True)
    top = np.linalg.svd(weight, compute_uv=False)[0]
    s = s.copy()
    for i in range(len(s)):
        if s[i] >= top:
            s[i] = (s[i] / 2 + top / 2 if base is None
                    else math.log(s[i], base) + top - math.log(top, base))
    rank = np.linalg.matrix_rank(delta)
    return u[:, :rank] @ np.diag(s[:rank]) @ v[:rank]


def _random(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- RECT ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep_share", [0.2, 0.35])
def test_rect_keeps_exactly_the_top_share_of_relative_changes(keep_share):
    delta, weight = _random(12, 20, seed=0), _random(12, 20, seed=1)
    kept = keep_largest_relative_changes(delta, weight, keep_share)
    n = delta.numel()
    nonzero = kept != 0
    assert int(nonzero.sum()) == n - int(n * (1 - keep_share))
    assert torch.equal(kept[nonzero], delta[nonzero])  # kept elements keep their values
    relative = (delta / weight).abs()
    assert float(relative[nonzero].min()) > float(relative[~nonzero].max())
    assert float(kept.norm()) < float(delta.norm())
    release = release_rect(delta.numpy(), weight.numpy(), 1 - keep_share)
    np.testing.assert_array_equal(kept.numpy(), release)


def test_rect_zero_weights_count_as_infinite_change_unless_unchanged():
    delta = torch.tensor([[0.25, 0.0, 5.0, 1.0]])
    weight = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    kept = keep_largest_relative_changes(delta, weight, 0.5)  # keeps 2 of 4
    assert kept.tolist() == [[0.25, 0.0, 5.0, 0.0]]


def test_rect_update_is_memits_with_all_but_the_top_share_zeroed(micro_model_path, tmp_path):
    """One edited layer: the value optimisation and keys are MEMIT's, so RECT's weight change must
    be MEMIT's own change with the smallest relative changes zeroed, and smaller than it."""
    settings = {**STRONG, "layers": (0,)}
    changes = []
    for cls, config in ((MEMIT, MEMITConfig(**settings)), (RECT, RECTConfig(**settings))):
        ctx = context(micro_model_path, tmp_path)
        method = cls(config, ctx)
        method.prepare()
        (name,) = method.edited_parameters()
        before = ctx.parameter(name).detach().clone()
        method.apply([ENDS_WITH_SUBJECT])
        changes.append((ctx.parameter(name).detach() - before, before))
    (memit, weight), (rect, _) = changes
    nonzero = rect != 0
    n = rect.numel()
    assert int(nonzero.sum()) == n - int(n * 0.8)
    torch.testing.assert_close(rect[nonzero], memit[nonzero], rtol=1e-4, atol=1e-6)
    assert float(rect.norm()) < 0.9 * float(memit.norm())
    relative = (memit / weight).abs()
    assert float(relative[nonzero].min()) >= float(relative[~nonzero].max())


# -- PRUNE -----------------------------------------------------------------------------------------
def _low_rank(singular: list[float], rows: int, cols: int, seed: int) -> torch.Tensor:
    u, _ = torch.linalg.qr(_random(rows, len(singular), seed=seed))
    v, _ = torch.linalg.qr(_random(cols, len(singular), seed=seed + 1))
    return u @ torch.diag(torch.tensor(singular, dtype=torch.float64)) @ v.T


@pytest.mark.parametrize("reduce_type", sorted(REDUCE_TYPES))
def test_prune_matches_the_release_on_a_tiny_matrix(reduce_type):
    weight = _random(6, 9, seed=3)
    top = float(torch.linalg.matrix_norm(weight, ord=2))
    delta = _low_rank([40.0, 8.0, 0.5 * top], 6, 9, seed=4)
    ours, count = restrained_perturbation(delta, top, reduce_type)
    assert count == 2
    release = release_prune(weight.numpy(), delta.numpy(), REDUCE_TYPES[reduce_type])
    np.testing.assert_allclose(ours.numpy(), release, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("reduce_type", sorted(REDUCE_TYPES))
def test_prune_shrinks_the_largest_singular_values_and_keeps_the_rest(reduce_type):
    """With the weight's largest singular value ``m`` at least ``1 / ln a`` (true of trained
    models' edited matrices), ``F`` maps ``m`` to itself, rises, and lies below the identity."""
    top = 6.0  # above 1 / ln 1.2 = 5.48, the largest of the bases' thresholds
    delta = _low_rank([200.0, 30.0, 7.0, 2.0], 8, 10, seed=5)
    restrained, count = restrained_perturbation(delta, top, reduce_type)
    before = torch.linalg.svdvals(delta)[:4]
    after = torch.linalg.svdvals(restrained)[:4]
    assert count == 3
    torch.testing.assert_close(after, restrain_singular_values(before, top, reduce_type))
    assert all(float(a) < 0.9 * float(b) for a, b in zip(after[:2], before[:2]))
    assert top <= float(after[2]) < 7.0
    assert float(after[3]) == pytest.approx(2.0, rel=1e-9)  # below m: untouched
    assert float(after[0]) > float(after[1]) > float(after[2])  # F keeps the order
    edge = restrain_singular_values(torch.tensor([top], dtype=torch.float64), top, reduce_type)
    assert float(edge) == pytest.approx(top)
    # an update with no singular value at m or above is left exactly as it is
    small = _low_rank([5.0, 1.0], 8, 10, seed=6)
    assert restrained_perturbation(small, top, reduce_type)[0] is small


def test_prune_log_grows_values_just_above_a_small_bound():
    """The release's log maps are below the identity only from ``1 / ln a`` on: with the largest
    singular value of the weight below it (a random micro model's, about 0.3), a value just above
    it grows. Recorded, since it decides whether PRUNE restrains a small model at all."""
    top = 0.3
    value = torch.tensor([0.6], dtype=torch.float64)
    assert float(restrain_singular_values(value, top, "log")) > 0.6
    assert float(restrain_singular_values(value, top, "linear")) < 0.6


def _target_logprob(ctx) -> float:
    probe = HFProbe(ctx.model, ctx.tokenizer, ctx.device)
    pair = ScoringPair(ENDS_WITH_SUBJECT.prompt, ENDS_WITH_SUBJECT.target_new)
    return probe.score([pair])[0].logprob


@pytest.mark.parametrize("reduce_type", ["log", "linear"])
def test_prune_scores_the_restrained_model_and_edits_the_unrestrained_one(
    micro_model_path, tmp_path, reduce_type
):
    """Two batches: PRUNE's unrestrained sum is MEMIT's own change (the release edits without
    restraint), the model holds ``W + F(sum)``, whose largest singular values are the restrained
    ones, and the first edit's target is still more likely than before once it is restrained."""
    memit_ctx = context(micro_model_path, tmp_path)
    memit = MEMIT(MEMITConfig(**STRONG), memit_ctx)
    memit.prepare()
    ctx = context(micro_model_path, tmp_path)
    prune = PRUNE(PRUNEConfig(**STRONG, reduce_type=reduce_type), ctx)
    prune.prepare()
    conv1d = ctx.layout.family.conv1d
    originals = [ctx.parameter(n).detach().clone() for n in prune.edited_parameters()]
    before = _target_logprob(ctx)
    for batch in ([ENDS_WITH_SUBJECT], RECORDS[:1]):
        memit.apply(batch)
        prune.apply(batch)
        if len(batch) == 1 and batch[0] is ENDS_WITH_SUBJECT:
            assert _target_logprob(ctx) > before + 0.2
    for layer, name, original in zip(prune.layers, prune.edited_parameters(), originals):
        change = ctx.parameter(name).detach() - original
        memit_change = memit_ctx.parameter(name).detach() - original
        if conv1d:
            change, memit_change = change.T, memit_change.T
        # the same edits up to float32 rounding of the back-and-forth shifts, which the second
        # batch's value optimisation carries on
        assert float((prune.raw[layer] - memit_change).norm()) < 1e-2 * float(memit_change.norm())
        raw_values = torch.linalg.svdvals(prune.raw[layer])
        assert float(raw_values[0]) > prune.bounds[layer]  # the restraint is at work
        expected = restrain_singular_values(raw_values, prune.bounds[layer], reduce_type)
        torch.testing.assert_close(torch.linalg.svdvals(change)[:2], expected[:2], rtol=1e-3,
                                   atol=1e-3)
        assert float(torch.linalg.svdvals(change)[0]) < 0.6 * float(raw_values[0])


def test_prune_state_round_trip_and_resume_match(micro_gpt2, tmp_path):
    config = PRUNEConfig(**{**STRONG, "v_steps": 5})
    first = PRUNE(config, context(micro_gpt2, tmp_path))
    first.prepare()
    first.apply(RECORDS[:1])
    state = first.state_dict()
    resumed = PRUNE(config, context(micro_gpt2, tmp_path))
    resumed.prepare()
    with torch.no_grad():
        for name in first.edited_parameters():
            resumed.ctx.parameter(name).copy_(first.ctx.parameter(name))
    resumed.load_state_dict(state)
    first.apply(RECORDS[1:])
    resumed.apply(RECORDS[1:])
    for name in first.edited_parameters():
        assert torch.equal(resumed.ctx.parameter(name), first.ctx.parameter(name))
    partial = {k: v for k, v in state.items() if k != "raw_perturbation.1"}
    with pytest.raises(ValueError, match="raw_perturbation.1"):
        resumed.load_state_dict(partial)


# -- both ------------------------------------------------------------------------------------------
def test_presets_are_the_releases_and_bad_settings_name_the_field(micro_llama):
    assert METHODS.get("rect") is RECT and METHODS.get("prune") is PRUNE
    for cls in (RECT, PRUNE):
        for preset, values in cls.presets.items():
            build_config(cls.Config, {k: str(v) for k, v in values.items()},
                         owner=f"{cls.name}@{preset}")
    assert set(RECT.presets) == {"gpt2-xl", "gpt-j-6b", "gpt-j"}  # the release gives no Llama-3
    assert RECT.presets["gpt2-xl"]["keep_share"] == 0.2
    llama = PRUNE.presets["llama-3-8b"]
    assert (llama["v_lr"], llama["clamp_norm_factor"], llama["mom2_n_samples"]) == (0.5, 4, 10_000)
    assert PRUNE.presets["gpt2-xl"]["mom2_update_weight"] == 20000
    with pytest.raises(ValueError, match="keep_share"):
        RECTConfig(keep_share=0)
    with pytest.raises(ValueError, match="reduce_type"):
        PRUNEConfig(reduce_type="log3")



def test_the_default_run_leaves_both_out_and_says_why(caplog):
    """Each adds about 20 s on the pocket model (docs/benchmarks.md), twice what the default run's
    budget leaves a new row."""
    from editbench.harness.plan.resolve import default_methods

    with caplog.at_level("INFO"):
        chosen = default_methods()
    assert "memit" in chosen and "rect" not in chosen and "prune" not in chosen
    assert "--methods rect" in caplog.text and "--methods prune" in caplog.text
