"""StableEdit: what its full whitening and warm-up constrain, the release's math on a tiny case,
presets, and resume after a kill."""

import math

import pytest
import torch
from test_hypernet import make_context

from editbench.core.architectures import ARCHITECTURES
from editbench.core.method import MethodRef, is_trainable
from editbench.core.models import weight_as_out_in
from editbench.methods.hypernet.net import RunningNormaliser
from editbench.methods.stableedit import (
    CONFIG_MODULES,
    RUN_MODULES,
    StableEdit,
    StableEditConfig,
    WhiteningNormaliser,
)
from editbench.methods.ultraedit import UltraEdit, UltraEditConfig, ultraedit_update


def fed_rows(method) -> dict[str, list[torch.Tensor]]:
    """Every block of ``[k || g]`` rows each normaliser is fed, in order."""
    seen: dict[str, list[torch.Tensor]] = {}
    for key, normaliser in method.normalisers().items():
        update = normaliser.update

        def recording(rows, key=key, update=update):
            seen.setdefault(key, []).append(rows.detach().double().clone())
            update(rows)

        normaliser.update = recording
    return seen


def weights(method) -> dict[str, torch.Tensor]:
    return {m.name: weight_as_out_in(method.ctx.model.get_submodule(m.name), m.conv1d)
            .detach().clone() for m in method.modules}


def test_it_is_ultraedit_with_another_normaliser_and_nothing_to_train():
    assert issubclass(StableEdit, UltraEdit) and not is_trainable(StableEdit)
    assert issubclass(WhiteningNormaliser, RunningNormaliser)


def test_the_scatter_is_that_of_every_gradient_row_seen(micro_llama):
    ctx = make_context(micro_llama)
    method = StableEdit(StableEditConfig(), ctx)
    seen = fed_rows(method)
    method.warm_up()
    method.apply(ctx.train_records()[:6])
    for key, normaliser in method.normalisers().items():
        rows = torch.cat(seen[key])
        grads = rows[:, normaliser.key_size:]
        centred = grads - grads.mean(0)
        assert normaliser.count.item() == rows.shape[0] > normaliser.value_size + 1
        assert torch.allclose(normaliser.scatter, centred.T @ centred, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("whiten", [True, False])
def test_whitened_gradients_of_the_rows_seen_are_decorrelated_and_standardised_ones_are_not(
    micro_llama, whiten
):
    """The claim of full whitening: the gradient part of every row the statistics hold comes out
    with scatter (n - d - 1) I, i.e. unit variance and no correlation; the per-coordinate map of
    UltraEdit leaves the correlations as they were (0.25 at most on this model)."""
    ctx = make_context(micro_llama)
    method = StableEdit(StableEditConfig(whiten=whiten), ctx)
    seen = fed_rows(method)
    method.warm_up()
    for key, normaliser in method.normalisers().items():
        rows = torch.cat(seen[key])
        n, d = rows.shape[0], normaliser.value_size
        sigma = normaliser.scatter / (n - d - 1)
        spectrum = torch.linalg.eigvalsh(sigma)
        assert spectrum.min() > 10 * normaliser.eig_floor * spectrum.mean()  # no floor at work
        out = normaliser(rows)[:, normaliser.key_size:]
        centred = out - out.mean(0)
        scatter = centred.T @ centred
        correlation = scatter / torch.outer(scatter.diagonal(), scatter.diagonal()).sqrt()
        off = (correlation - torch.eye(d, dtype=correlation.dtype)).abs().max()
        if whiten:
            assert torch.allclose(scatter, (n - d - 1) * torch.eye(d, dtype=scatter.dtype),
                                  atol=1e-6 * n)
        else:
            assert off > 0.15


def test_whitened_norms_do_not_depend_on_how_the_gradient_space_is_mixed_or_scaled():
    """Full whitening measures a gradient in the statistics' own metric (Mahalanobis), so mixing
    the gradient coordinates by any invertible map leaves each whitened gradient's norm as it
    was; per-coordinate standardisation changes it (by more than 20% for some row here). With the
    floor relative to the spectrum that holds at the small scale of real output gradients too;
    the release's absolute floor of 1e-6 turns whitening into a fixed scale there."""
    generator = torch.Generator().manual_seed(0)
    keys = torch.randn(400, 4, generator=generator, dtype=torch.float64)
    grads = torch.randn(400, 6, generator=generator, dtype=torch.float64) * torch.arange(1.0, 7)
    mix = torch.randn(6, 6, generator=generator, dtype=torch.float64) + 3 * torch.eye(6)

    def norms(g: torch.Tensor, whiten: bool = True, relative: bool = True) -> torch.Tensor:
        normaliser = WhiteningNormaliser(4, 6, 1e-6, relative_floor=relative)
        normaliser.whitening = whiten
        for block in torch.cat((keys, g), -1).split(50):  # merged block by block, as turns are
            normaliser.update(block)
        return normaliser(torch.cat((keys, g), -1))[:, 4:].norm(dim=-1)

    assert torch.allclose(norms(grads @ mix), norms(grads), rtol=1e-8)
    assert ((norms(grads @ mix, whiten=False) / norms(grads, whiten=False)) - 1).abs().max() > 0.2
    small = 1e-4 * grads  # variances of 1e-8 to 4e-7, below the release's floor
    assert torch.allclose(norms(small @ mix), norms(grads), rtol=1e-8)
    assert ((norms(small @ mix, relative=False) / norms(grads)) - 1).abs().max() > 0.2


def test_every_update_is_bounded_by_its_ridge(micro_llama):
    """The bounded-norm side of the stability loop: (K^T K + l I)^-1 K^T has spectral norm at most
    1 / (2 sqrt(l)), so ||delta W|| <= ||V|| / (2 sqrt(l)) turn after turn, whatever the keys."""
    ctx = make_context(micro_llama)
    ridge = 0.5
    method = StableEdit(StableEditConfig(ridge=ridge, lr=1e-2), ctx)
    method.warm_up()
    records = ctx.task.load("eval")
    for turn in range(6):
        batch = records[turn * 5:(turn + 1) * 5]
        observed = method.read_keys_and_grads(batch, whole_turn=True)
        method.update_normalisers(observed)
        for module in method.modules:
            key, _ = method.slots[module.name]
            normaliser = method.normalisers()[key]
            keys, grads = observed.keys[module.name], observed.grads[module.name]
            hat = normaliser(torch.cat((keys, grads), -1))
            values = -1e-2 * hat[:, :module.key_size].pow(2).sum(-1, keepdim=True) \
                * hat[:, module.key_size:]
            shift = ultraedit_update(keys, grads, normaliser, 1e-2, ridge)
            assert 0 < shift.norm() <= values.norm() / (2 * math.sqrt(ridge)) * (1 + 1e-5)


# -- the release's math, transcribed (MINE-USTC/StableEdit 6ea8eae, nets.py:35-113 and
# editor/stableedit.py:68-117), on a tiny case ----------------------------------------------------
EPS32 = torch.finfo(torch.float32).eps


class ReleaseStatistics:
    """nets.py's RunningMeanStd with label 'stable' and v_dim set: mean and sum of squares merged
    with the population batch variance, the gradients' covariance with torch.cov(correction=0)
    and an outer product of the mean shift; 'train' mode standardises, otherwise the gradients
    are whitened by the floored inverse square root of cov / (n - d - 1 + eps) once n > d + 1."""

    def __init__(self, k: int, v: int) -> None:
        self.k, self.v, self.n = k, v, 0.0
        self.mean = torch.zeros(k + v, dtype=torch.float64)
        self.var = torch.zeros(k + v, dtype=torch.float64)
        self.cov_value = torch.zeros(v, v, dtype=torch.float64)
        self.mode = "inference"

    def update(self, x: torch.Tensor, mode: str) -> None:
        self.mode, b = mode, x.shape[0]
        n = self.n + b
        delta = x.mean(0) - self.mean
        self.mean = self.mean + b * delta / n
        self.var = self.var + b * x.var(0, unbiased=False) + self.n * b * delta.pow(2) / n
        self.std = (self.var / (n - 1 + EPS32)).sqrt()
        values = x[:, self.k:]
        self.cov_value = (self.cov_value + b * torch.cov(values.T, correction=0)
                          + self.n * b * torch.outer(delta[self.k:], delta[self.k:]) / n)
        self.n = n

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "train" or not self.n > self.v + 1:
            return (x - self.mean) / (self.std + EPS32)
        cov = self.cov_value / (self.n - self.v - 1 + EPS32)
        eigvals, eigvecs = torch.linalg.eigh(cov)
        inv_sqrt = eigvecs @ torch.diag(eigvals.clamp(min=1e-6).rsqrt()) @ eigvecs.T
        x_k = (x[:, :self.k] - self.mean[:self.k]) / (self.std[:self.k] + EPS32)
        return torch.cat((x_k, (x[:, self.k:] - self.mean[self.k:]) @ inv_sqrt), 1)


def release_shift(stats: ReleaseStatistics, keys, grads, lr: float, alpha: float):
    z = stats(torch.cat((keys, grads), -1))
    k_hat, g_hat = z[:, :stats.k], z[:, stats.k:]
    v_feature = -lr * (k_hat * k_hat).sum(-1, keepdim=True) * g_hat
    mat = keys.T @ keys + alpha * torch.eye(stats.k, dtype=keys.dtype)
    return torch.linalg.solve(mat, keys.T @ v_feature)


def test_the_update_matches_a_transcription_of_the_release_on_a_tiny_case():
    """A warm-up turn in the release's 'train' mode (per-coordinate), then turns that cross
    n = d + 1 (per-coordinate below it, whitened above), each turn two sub-batches merged one at a
    time as the release's ``cache`` does, against editbench's normaliser merging each turn at
    once; keys 5 wide, gradients 13 wide, lr 1e-2, alpha 10."""
    generator = torch.Generator().manual_seed(3)
    k, v, lr, alpha = 5, 13, 1e-2, 10.0
    release = ReleaseStatistics(k, v)
    ours = WhiteningNormaliser(k, v, 1e-6, relative_floor=False)
    mixing = torch.randn(v, v, generator=generator, dtype=torch.float64)
    whitened_turns = 0
    for turn in range(8):
        warm = turn < 1
        subs = [(torch.randn(3, k, generator=generator, dtype=torch.float64) + 1,
                 torch.randn(3, v, generator=generator, dtype=torch.float64) @ mixing)
                for _ in range(2)]
        for keys, grads in subs:
            release.update(torch.cat((keys, grads), -1), "train" if warm else "inference")
        keys = torch.cat([s[0] for s in subs])
        grads = torch.cat([s[1] for s in subs])
        ours.update(torch.cat((keys, grads), -1))
        ours.whitening = not warm
        expected = release_shift(release, keys, grads, lr, alpha)
        got = ultraedit_update(keys, grads, ours, lr, alpha)
        whitened_turns += ours.whitener() is not None and not warm
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7 * expected.abs().max())
    assert whitened_turns == 6  # n = 12 after turn 1 (per coordinate), 18 > d + 1 from turn 2


# -- the warm-up ---------------------------------------------------------------------------------
def test_the_warm_up_edits_the_train_split_turn_by_turn_into_the_statistics(micro_llama):
    ctx = make_context(micro_llama)
    config = StableEditConfig(warm_up_records=25, warm_up_batch=10)
    method = StableEdit(config, ctx)
    turns = method.warm_up_turns()
    assert [len(t) for t in turns] == [10, 10]  # the remainder of 5 left out
    assert turns[0] == ctx.train_records()[:10]
    before = weights(method)
    seen = fed_rows(method)
    method.warm_up()
    after = weights(method)
    assert all(len(blocks) == 2 for blocks in seen.values())
    assert all(not torch.equal(before[n], after[n]) for n in before)

    quiet = StableEdit(StableEditConfig(warm_up_records=25, warm_up_edits=False),
                       make_context(micro_llama))
    untouched = weights(quiet)
    quiet.warm_up()
    assert all(torch.equal(untouched[n], w) for n, w in weights(quiet).items())
    for key, normaliser in quiet.normalisers().items():
        assert normaliser.count.item() == method.normalisers()[key].count.item()


def test_the_first_apply_warms_up_once_and_prepare_leaves_the_model_alone(micro_llama):
    ctx = make_context(micro_llama)
    method = StableEdit(StableEditConfig(warm_up_records=20), ctx)
    before = weights(method)
    method.prepare()
    assert all(torch.equal(before[n], w) for n, w in weights(method).items())
    seen = fed_rows(method)
    records = ctx.task.load("eval")
    method.apply(records[:3])
    method.apply(records[3:6])
    assert all(len(blocks) == 2 + 2 for blocks in seen.values())  # two warm-up turns, two edits


def test_after_the_warm_up_the_first_small_turn_is_whitened_and_without_it_is_not(micro_llama):
    """Whitening needs more than d + 1 rows; a one-record first turn has fewer on this model, so
    without the warm-up it falls back to per-coordinate standardisation."""
    records = make_context(micro_llama).task.load("eval")[:1]
    for warm_up, whitened in ((0, False), (2000, True)):
        method = StableEdit(StableEditConfig(warm_up_records=warm_up), make_context(micro_llama))
        method.apply(records)  # the warm-up, then the turn
        for normaliser in method.normalisers().values():
            assert (normaliser.whitener() is not None) == whitened
            assert whitened or normaliser.count.item() <= normaliser.value_size + 1


def test_the_release_warm_up_turn_is_ultraedit_s_turn(micro_llama):
    """The release's warm-up normalises per coordinate (its 'train' mode): its first turn writes
    the update UltraEdit writes on the same records with the same step and ridge."""
    batch = make_context(micro_llama).train_records()[:10]
    stable = StableEdit(StableEditConfig(warm_up_records=10, warm_up_whitening=False, ridge=10.0),
                        make_context(micro_llama))
    ultra = UltraEdit(UltraEditConfig(ridge=10.0), make_context(micro_llama))
    stable.warm_up()
    ultra.apply(batch)
    ours, theirs = weights(stable), weights(ultra)
    assert all(torch.allclose(ours[n], theirs[n], rtol=1e-5, atol=1e-7) for n in ours)
    paper = StableEdit(StableEditConfig(warm_up_records=10, ridge=10.0), make_context(micro_llama))
    paper.warm_up()
    assert any(not torch.allclose(weights(paper)[n], theirs[n], atol=1e-6) for n in theirs)


def test_a_task_without_a_train_split_is_named_with_the_way_out(micro_llama):
    ctx = make_context(micro_llama)
    ctx.train_records = lambda: []
    (problem,) = StableEdit(StableEditConfig(), ctx).requirements()
    assert "train split" in problem and "stableedit.warm_up_records=0" in problem
    assert StableEdit(StableEditConfig(warm_up_records=0), ctx).requirements() == []


@pytest.mark.parametrize("field,value", [("eig_floor", 0.0), ("warm_up_records", -1),
                                         ("warm_up_batch", 0), ("ridge", 0.0)])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        StableEditConfig(**{field: value})


def test_presets_follow_the_release_configs_and_run_script():
    architectures = {a.name for a in ARCHITECTURES}
    assert set(CONFIG_MODULES) == set(RUN_MODULES) and set(CONFIG_MODULES) <= architectures
    mistral = MethodRef.parse("stableedit").config({}, "mistral-7b")
    assert mistral.module_names == tuple(f"model.layers.{i}.mlp.down_proj" for i in (28, 29, 30))
    assert (mistral.lr, mistral.ridge) == (1e-6, 10.0)
    assert MethodRef.parse("stableedit").config({}, "gpt-j-6b").lr == 2e-6
    llama = MethodRef.parse("stableedit").config({}, "llama-3-8b").module_names
    assert len(llama) == 12 and llama[0].endswith("11.mlp.gate_proj") and "up_proj" in llama[-1]
    run = MethodRef.parse("stableedit@llama-3-8b-run").config({})
    assert [int(n.split(".")[2]) for n in run.module_names] == [11, 12, 22, 23, 28, 29, 30]
    assert len(RUN_MODULES["gpt-j-6b"]) == 17 and len(RUN_MODULES["qwen2.5-7b"]) == 15
    release = MethodRef.parse("stableedit@release").config({})
    assert (release.warm_up_batch, release.warm_up_records, release.warm_up_whitening,
            release.normaliser, release.relative_floor) == (100, 2000, False, "exact", False)
    paper = MethodRef.parse("stableedit").config({})
    assert paper.warm_up_whitening and paper.relative_floor


# -- lifelong state and resume -------------------------------------------------------------------
def test_resuming_from_weights_and_state_equals_an_uninterrupted_run(micro_llama):
    """A snapshot (edited weights and ``state_dict``: the scatter and that the warm-up has run)
    is all StableEdit needs: a new process that loads it edits on where one that never stopped
    does, and does not warm up again. Without the scatter the edits differ."""
    records = make_context(micro_llama).task.load("eval")
    turns = [records[t * 4:(t + 1) * 4] for t in range(3)]
    config = StableEditConfig(warm_up_records=20)

    def run(method, batches):
        for batch in batches:
            method.apply(batch)
        return {p: method.ctx.parameter(p).detach().clone() for p in method.edited_parameters()}

    def started():
        return StableEdit(config, make_context(micro_llama))

    through = run(started(), turns)
    first = started()
    saved, state = run(first, turns[:2]), first.state_dict()
    assert any(k.endswith(".scatter") for k in state) and state["warm_up.done"]

    def resumed(drop_scatter: bool):
        method = started()
        with torch.no_grad():
            for name, value in saved.items():
                method.ctx.parameter(name).copy_(value)
        loaded = dict(state)
        if drop_scatter:
            loaded = {k: torch.zeros_like(v) if k.endswith(".scatter") else v
                      for k, v in loaded.items()}
        method.load_state_dict(loaded)
        method.warm_up = None  # a resumed run that tried to warm up again would fail here
        return run(method, turns[2:])

    assert all(torch.equal(resumed(False)[p], through[p]) for p in through)
    forgetful = resumed(True)
    assert any(not torch.allclose(forgetful[p], through[p]) for p in through)


def test_the_default_run_takes_it():
    """On the pocket model with the default run's settings its warm-up, 200 edits and their
    checkpoints take 3.5-5.3 s, UltraEdit's 4.2 s (docs/benchmarks.md): a default-run row."""
    from editbench.harness.plan.resolve import default_methods

    assert {"stableedit", "ultraedit"} <= set(default_methods())
