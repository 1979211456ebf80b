"""UltraEdit: lifelong statistics, the closed-form solve, its presets, resume after a kill."""

import pytest
import torch
from test_hypernet import make_context

from editbench.core.architectures import ARCHITECTURES
from editbench.core.method import MethodRef, is_trainable
from editbench.core.models import weight_as_out_in
from editbench.methods.hypernet import EditorCore, HypernetMethod
from editbench.methods.mend import MEND
from editbench.methods.objectives import summed_target_nll
from editbench.methods.ultraedit import RELEASE_MODULES, UltraEdit, UltraEditConfig

TURN = 4  # records per turn (one apply)


def spied(method: UltraEdit) -> list:
    """Every batch of rows the method reads, in order (what its normalisers were fed)."""
    seen = []
    read = method.read_keys_and_grads

    def recording(records, **options):
        observed = read(records, **options)
        seen.append(observed)
        return observed

    method.read_keys_and_grads = recording
    return seen


def rows_by_shape(method: UltraEdit, observed, key: str) -> list[torch.Tensor]:
    """One [key || grad] block per module of shape ``key`` and per sub-batch, as read."""
    out = []
    for module in method.modules:
        if method.slots[module.name][0] == key:
            rows = torch.cat((observed.keys[module.name], observed.grads[module.name]), -1).double()
            out += list(rows.split(list(observed.groups)))
    return out


def test_it_is_the_untrained_core_and_the_hypernetworks_are_the_trained_one():
    assert issubclass(UltraEdit, EditorCore) and not issubclass(UltraEdit, HypernetMethod)
    assert not is_trainable(UltraEdit) and not hasattr(UltraEdit, "fit")
    assert is_trainable(MEND) and issubclass(MEND, EditorCore)


def test_lifelong_statistics_after_n_turns_equal_a_direct_computation_over_all_turns(micro_llama):
    ctx = make_context(micro_llama)
    method = UltraEdit(UltraEditConfig(sub_batch=2), ctx)
    seen = spied(method)
    records = ctx.train_records()
    counts = []
    for turn in range(4):
        method.apply(records[turn * TURN:(turn + 1) * TURN])
        counts.append({k: n.count.item() for k, n in method.normalisers().items()})
    assert len(seen) == 4
    assert counts[0] != counts[-1]  # never reset: every turn adds its rows
    for key, normaliser in method.normalisers().items():
        rows = torch.cat(
            [block for observed in seen for block in rows_by_shape(method, observed, key)]
        )
        assert normaliser.count.item() == rows.shape[0]
        assert torch.allclose(normaliser.mean, rows.mean(0), rtol=1e-9, atol=1e-9)
        assert torch.allclose(normaliser.std, rows.std(0), rtol=1e-7, atol=1e-9)


def test_the_release_merge_after_n_turns_equals_its_closed_form(micro_llama):
    """The release merges once per module and sub-batch with the unbiased batch variance, so its
    sum of squares is the exact one plus each block's own spread over (n_b - 1)."""
    ctx = make_context(micro_llama)
    method = UltraEdit(UltraEditConfig(normaliser="release", sub_batch=2), ctx)
    seen = spied(method)
    records = ctx.train_records()
    for turn in range(3):
        method.apply(records[turn * TURN:(turn + 1) * TURN])
    for key, normaliser in method.normalisers().items():
        blocks = [block for observed in seen for block in rows_by_shape(method, observed, key)]
        rows = torch.cat(blocks)
        exact_m2 = ((rows - rows.mean(0)) ** 2).sum(0)
        own = sum(((b - b.mean(0)) ** 2).sum(0) / (len(b) - 1) for b in blocks)
        assert torch.allclose(normaliser.mean, rows.mean(0), rtol=1e-9, atol=1e-9)
        assert torch.allclose(normaliser.m2, exact_m2 + own, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("ridge", [1.0, 10.0])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_each_turn_adds_the_solution_of_its_normal_equations(
    family, ridge, micro_llama, micro_gpt2
):
    """(K^T K + ridge I) delta W = K^T V with raw keys K and V = -lr ||k^||^2 g^, the rows
    normalised by statistics that already hold this turn; delta W is what lands in the weight."""
    ctx = make_context({"llama": micro_llama, "gpt2": micro_gpt2}[family])
    lr = 1e-2
    method = UltraEdit(UltraEditConfig(lr=lr, ridge=ridge), ctx)
    seen = spied(method)
    records = ctx.train_records()
    method.apply(records[:TURN])
    weights = {m.name: weight_as_out_in(ctx.model.get_submodule(m.name), m.conv1d).detach().clone()
               for m in method.modules}
    method.apply(records[TURN:2 * TURN])
    observed = seen[-1]
    for module in method.modules:
        key, _ = method.slots[module.name]
        normaliser = method.normalisers()[key]
        keys, grads = observed.keys[module.name].double(), observed.grads[module.name].double()
        normalised = (
            (torch.cat((keys, grads), -1) - normaliser.mean) / (normaliser.std + normaliser.eps)
        )
        keys_hat, grads_hat = normalised.split([module.key_size, module.value_size], -1)
        values = -lr * (keys_hat ** 2).sum(-1, keepdim=True) * grads_hat
        after = weight_as_out_in(ctx.model.get_submodule(module.name), module.conv1d).detach()
        shift = (after - weights[module.name]).T.double()  # (key_size, value_size)
        eye = torch.eye(module.key_size, dtype=torch.float64)
        target = keys.T @ values
        residual = (keys.T @ keys + ridge * eye) @ shift - target
        assert shift.abs().max() > 0
        assert residual.abs().max() <= 1e-3 * target.abs().max()


def test_state_dict_round_trip(micro_llama):
    ctx = make_context(micro_llama)
    method = UltraEdit(UltraEditConfig(), ctx)
    records = ctx.train_records()
    method.apply(records[:TURN])
    state = method.state_dict()
    assert state and all(torch.isfinite(t).all() for t in state.values())
    other = UltraEdit(UltraEditConfig(), make_context(micro_llama))
    other.load_state_dict(state)
    assert all(torch.equal(other.state_dict()[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="snapshot state"):
        other.load_state_dict({"nonsense": torch.zeros(1)})


def test_resuming_from_weights_and_state_equals_an_uninterrupted_run(micro_llama):
    """What a snapshot keeps (the edited weights and ``state_dict``) is all UltraEdit needs: a new
    process that loads them and edits on ends where one that never stopped ends; one that loses the
    statistics does not."""
    records = make_context(micro_llama).train_records()
    turns = [records[t * TURN:(t + 1) * TURN] for t in range(3)]

    def run(method, batches):
        for batch in batches:
            method.apply(batch)
        return {p: method.ctx.parameter(p).detach().clone() for p in method.edited_parameters()}

    through = run(UltraEdit(UltraEditConfig(), make_context(micro_llama)), turns)
    first = UltraEdit(UltraEditConfig(), make_context(micro_llama))
    weights, state = run(first, turns[:2]), first.state_dict()

    def resumed(with_state: bool):
        method = UltraEdit(UltraEditConfig(), make_context(micro_llama))
        with torch.no_grad():
            for name, value in weights.items():
                method.ctx.parameter(name).copy_(value)
        if with_state:
            method.load_state_dict(state)
        return run(method, turns[2:])

    again = resumed(True)
    assert all(torch.equal(again[p], through[p]) for p in through)
    forgetful = resumed(False)
    assert any(not torch.allclose(forgetful[p], through[p]) for p in through)


def test_the_default_lr_edits_a_small_model_where_the_release_lr_does_not(micro_llama):
    """One turn lowers the edits' own summed target NLL (0.31 nats on this seeded micro model) at
    the default lr; the release's 1e-6, sized for 4096-wide keys, moves it by a thousandth of
    that."""

    def drop(lr: float) -> float:
        ctx = make_context(micro_llama)
        method = UltraEdit(UltraEditConfig(lr=lr), ctx)
        batch = ctx.train_records()[:10]
        encoded = method.encode([(r.prompt, r.target_new) for r in batch])

        def nll() -> float:
            with torch.no_grad():
                logits = ctx.model(
                    input_ids=encoded.input_ids, attention_mask=encoded.attention_mask
                ).logits
                return summed_target_nll(logits, encoded).item()

        before = nll()
        method.apply(batch)
        return before - nll()

    assert drop(UltraEditConfig().lr) > 0.1
    assert abs(drop(1e-6)) < 0.01


def test_module_names_choose_modules_by_path_and_name_a_missing_one(micro_llama):
    ctx = make_context(micro_llama)
    names = ("model.layers.0.mlp.gate_proj", "model.layers.1.mlp.up_proj")
    method = UltraEdit(UltraEditConfig(module_names=names), ctx)
    assert [m.name for m in method.modules] == list(names)
    assert len(method.normalisers()) == 1  # gate and up share a shape, so one normaliser
    with pytest.raises(
        ValueError, match="module_names: the model has no module 'model.layers.9.mlp.up_proj'"
    ):
        UltraEdit(UltraEditConfig(module_names=("model.layers.9.mlp.up_proj",)),
                  make_context(micro_llama))


def test_presets_follow_the_release_run_scripts():
    architectures = {a.name for a in ARCHITECTURES}
    for name in RELEASE_MODULES:
        assert name.partition("-fever")[0].partition("-wikibigedit")[0] in architectures
    mistral = MethodRef.parse("ultraedit").config({}, "mistral-7b")
    assert mistral.module_names == (
        "model.layers.29.mlp.down_proj", "model.layers.30.mlp.down_proj"
    )
    assert mistral.lr == 1e-6 and mistral.sub_batch == 10 and mistral.ridge == 1.0
    llama = MethodRef.parse("ultraedit").config({}, "llama-3-8b").module_names
    assert (
        len(llama) == 12
        and llama[0] == "model.layers.11.mlp.gate_proj"
        and llama[-1] == "model.layers.24.mlp.up_proj"
    )
    release = MethodRef.parse("ultraedit@release").config({}, "mistral-7b")
    assert release.normaliser == "release" and release.module_names == mistral.module_names
    assert MethodRef.parse("ultraedit").config({}).normaliser == "exact"
