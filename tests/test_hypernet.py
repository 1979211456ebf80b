"""The shared hypernetwork core: module choice, hooks, normaliser, network, update rules, state."""

import dataclasses

import pytest
import torch

from editbench.core.models import ModelLayout, load_model
from editbench.core.task import TaskOptions
from editbench.methods import EditContext
from editbench.methods.hypernet.modules import default_layers, keys_and_grads, select_modules
from editbench.methods.hypernet.net import EditorNet, RunningNormaliser, effective_rank
from editbench.methods.malmen import MALMEN, MALMENConfig, malmen_update, ridge_solve
from editbench.methods.mend import MEND, MENDConfig, mend_update
from editbench.methods.objectives import masked_target_nll
from editbench.tasks.pocket import PocketConfig, PocketTask

TINY = PocketConfig(n_entities=20)


def make_context(path, tmp_path=None):
    model, tokenizer = load_model(path, torch.device("cpu"), torch.float32)
    task = PocketTask(TaskOptions(), TINY)
    return EditContext(
        model=model, tokenizer=tokenizer, layout=ModelLayout.of(model), device=torch.device("cpu"),
        cache_dir=tmp_path or path, task=task, seed=0, generator=torch.Generator().manual_seed(0),
        train_records=lambda: task.load("train")
    )


def test_default_layers_follow_the_authors_band():
    assert default_layers(32) == list(range(22, 31))  # RLEdit on Llama-3-8B: layers 22-30
    assert default_layers(4) == [1, 2]
    assert default_layers(3) == [0, 1]
    assert default_layers(1) == [0]


def test_modules_are_chosen_from_the_model_config(micro_llama, micro_gpt2):
    llama = make_context(micro_llama)
    names = [m.name for m in select_modules(llama.model, llama.layout, ())]
    assert names == ["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj",
                     "model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj"]
    gpt2 = make_context(micro_gpt2)
    (module,) = select_modules(gpt2.model, gpt2.layout, (-1,))
    assert module.name == "transformer.h.2.mlp.c_proj" and module.conv1d
    assert (module.key_size, module.value_size) == (128, 32)  # GPT-2 stores Conv1D as (in, out)
    with pytest.raises(ValueError, match="modules must be one of"):
        select_modules(gpt2.model, gpt2.layout, (), "attention")


def test_cached_keys_and_gradients_decompose_the_weight_gradient(micro_model_path):
    """Summed over all positions, key (x) output-gradient equals dL/dW for every edited module,
    including the paths through the edited modules above it; so the hooks read the right tensors."""
    ctx = make_context(micro_model_path)
    modules = select_modules(ctx.model, ctx.layout, (0, 1), "mlp_out")
    records = ctx.train_records()[:3]
    batch = ctx.encoder.collate([ctx.encoder.encode(r.prompt, r.target_new) for r in records])
    everywhere = type(batch)(batch.input_ids, batch.attention_mask, batch.labels,
                             batch.attention_mask.bool(), batch.prompt_last)
    cached = keys_and_grads(
        ctx.model, modules, everywhere, lambda logits, _: masked_target_nll(logits, batch)
    )
    weights = [ctx.parameter(m.parameter) for m in modules]
    for w in weights:
        w.requires_grad_(True)
    logits = ctx.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    expected = torch.autograd.grad(masked_target_nll(logits, batch), weights)
    for module, grad in zip(modules, expected):
        outer = cached.keys[module.name].T @ cached.grads[module.name]  # (in, out)
        grad_in_out = grad if module.conv1d else grad.T
        assert torch.allclose(outer, grad_in_out, atol=1e-6, rtol=1e-4)
    assert all(not w.grad for w in weights)


def test_answer_token_rows_are_the_target_positions(micro_llama):
    ctx = make_context(micro_llama)
    method = MEND(MENDConfig(), ctx)
    records = ctx.train_records()[:4]
    cached = method.read_keys_and_grads(records)
    n_answer_tokens = sum(ctx.encoder.encode(r.prompt, r.target_new).n_target for r in records)
    for module in method.modules:
        assert cached.keys[module.name].shape == (n_answer_tokens, module.key_size)
        assert cached.grads[module.name].shape == (n_answer_tokens, module.value_size)
    assert all(not ctx.parameter(m.parameter).requires_grad for m in method.modules)


def test_normaliser_statistics_equal_a_direct_computation():
    torch.manual_seed(0)
    chunks = [torch.randn(n, 5) * torch.arange(1, 6) + 3 for n in (7, 1, 12, 2)]
    norm = RunningNormaliser(5)
    for chunk in chunks:
        norm.update(chunk)
    rows = torch.cat(chunks).double()
    assert norm.count.item() == rows.shape[0]
    assert torch.allclose(norm.mean, rows.mean(0), atol=1e-12)
    assert torch.allclose(norm.std, rows.std(0), atol=1e-12)
    normalised = norm(rows.float())
    assert torch.allclose(normalised.mean(0), torch.zeros(5), atol=1e-5)
    assert torch.allclose(normalised.std(0), torch.ones(5), atol=1e-5)


def test_untrained_network_is_the_normaliser_and_its_blocks_learn_from_the_first_step():
    """The releases' initialisation (B = 0, bias = 0) with their clamp(0) activation: an untrained
    block is the identity, and still every block parameter but the scale gets a gradient at once,
    because clamp's derivative at exactly 0 is 1 (relu's is 0)."""
    torch.manual_seed(0)
    keys, grads = torch.randn(6, 8), torch.randn(6, 4)
    net = EditorNet(8, 4, rank=3, n_blocks=2, n_modules=2, edit_lr=1e-3)
    net.normaliser.update(torch.cat((keys, grads), -1) * 2 + 1)
    pseudo_keys, pseudo_grads = net(keys, grads, 1)
    assert torch.allclose(torch.cat((pseudo_keys, pseudo_grads), -1),
                          net.normaliser(torch.cat((keys, grads), -1)), atol=1e-6)
    (pseudo_keys.sum() + pseudo_grads.pow(2).sum()).backward()
    for block in net.blocks:
        assert (
            block.B.grad.abs().sum() > 0
            and block.bias.grad.abs().sum() > 0
            and block.shift.grad.abs().sum() > 0
        )
    at_zero = torch.zeros(3, requires_grad=True)
    at_zero.clamp(min=0).sum().backward()
    assert at_zero.grad.tolist() == [1.0, 1.0, 1.0]
    relu = torch.zeros(3, requires_grad=True)
    torch.relu(relu).sum().backward()
    assert relu.grad.tolist() == [0.0, 0.0, 0.0]  # why the releases use clamp


def test_the_rank_cap_is_editbench_s_and_the_releases_turn_it_off():
    assert effective_rank(1920, 4096 + 16384) == 1920 and effective_rank(1920, 512) == 128
    assert effective_rank(1920, 512, cap=False) == 1920
    net = EditorNet(8, 4, rank=16, n_blocks=1, n_modules=1, edit_lr=1e-3, cap_rank=False)
    assert net.blocks[0].A.shape == (12, 16)


def test_the_release_normaliser_merges_as_released():
    """MALMEN's merge adds n_b * var_b (unbiased): more than the exact sum of squares, by
    n_b/(n_b-1) on each batch's own spread; a one-row batch makes the statistics NaN, as there."""
    torch.manual_seed(0)
    chunks = [torch.randn(n, 3) for n in (4, 5)]
    exact, release = RunningNormaliser(3), RunningNormaliser(3, "release")
    for chunk in chunks:
        exact.update(chunk)
        release.update(chunk)
    rows = torch.cat(chunks).double()
    assert torch.allclose(exact.m2, ((rows - rows.mean(0)) ** 2).sum(0))
    own = sum(((c.double() - c.double().mean(0)) ** 2).sum(0) / (len(c) - 1) for c in chunks)
    assert torch.allclose(release.m2 - exact.m2, own)  # each batch counted n_b/(n_b-1) times
    release.update(torch.randn(1, 3))
    assert torch.isnan(release.std).all()


def test_mend_update_has_rank_at_most_the_number_of_rows():
    torch.manual_seed(0)
    for n in (1, 3, 5):
        pseudo_keys, pseudo_grads = torch.randn(n, 16), torch.randn(n, 12)
        factors = mend_update(
            torch.randn(n, 16), pseudo_keys, pseudo_grads, torch.tensor(0.1), torch.tensor(0.0)
        )
        assert factors.shape == (16, 12) and factors.nbytes() == n * (16 + 12) * 4
        update = factors.dense()
        assert torch.linalg.matrix_rank(update) == n
        assert torch.allclose(
            update, -0.1 * sum(torch.outer(k, g) for k, g in zip(pseudo_keys, pseudo_grads))
        )


def test_a_mend_edit_of_n_edits_has_rank_at_most_n_per_module(micro_llama):
    """One row per answer token: with n single-token targets an update has rank <= n (MEND §3.1)."""
    ctx = make_context(micro_llama)
    method = MEND(MENDConfig(edit_lr=1e-2), ctx)
    multi = ctx.train_records()[:3]
    words = {
        w.strip(".,") for r in ctx.train_records() for w in f"{r.prompt} {r.target_true}".split()
    }
    one_token = sorted(w for w in words if ctx.encoder.encode(multi[0].prompt, w).n_target == 1)
    single = [dataclasses.replace(r, target_new=w) for r, w in zip(multi, one_token)]
    for records in (single[:2], multi):
        cached = method.read_keys_and_grads(records)
        method.update_normalisers(cached)
        rows = cached.keys[method.modules[0].name].shape[0]
        before = {m.parameter: ctx.parameter(m.parameter).clone() for m in method.modules}
        method.apply(records)
        for module in method.modules:
            change = ctx.parameter(module.parameter) - before[module.parameter]
            assert 0 < torch.linalg.matrix_rank(change) <= rows < min(change.shape)
    assert len(single) >= 2 and rows > len(multi)  # multi-token targets: rank <= answer tokens


@pytest.mark.parametrize("n", [5, 40])  # fewer rows than key dimensions, and more
def test_malmen_update_solves_its_normal_equations(n):
    torch.manual_seed(n)
    keys = torch.randn(n, 16, dtype=torch.float64)
    pseudo_keys, pseudo_grads = (
        torch.randn(n, 16, dtype=torch.float64), torch.randn(n, 12, dtype=torch.float64)
    )
    lr, log_ridge = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-1.5, dtype=torch.float64)
    update = malmen_update(keys, pseudo_keys, pseudo_grads, lr, log_ridge).dense()
    values = -lr * (keys * pseudo_keys).sum(-1, keepdim=True) * pseudo_grads
    lhs = (keys.T @ keys + log_ridge.exp() * torch.eye(16, dtype=torch.float64)) @ update
    assert torch.allclose(lhs, keys.T @ values, atol=1e-10, rtol=1e-10)
    # the ridge acts
    assert not torch.allclose(update, torch.linalg.lstsq(keys, values).solution, atol=1e-3)


def test_malmen_edit_on_a_model_satisfies_the_normal_equations(micro_gpt2):
    ctx = make_context(micro_gpt2)
    method = MALMEN(MALMENConfig(edit_lr=1e-2), ctx)
    records = ctx.train_records()[:4]
    cached = method.read_keys_and_grads(records)
    method.update_normalisers(cached)
    with torch.no_grad():
        shifts = method.shifts(cached)
    for module in method.modules:
        key, index = method.slots[module.name]
        net = method.nets[key]
        keys = cached.keys[module.name].double()
        with torch.no_grad():
            pseudo_keys, pseudo_grads = net(
                cached.keys[module.name], cached.grads[module.name], index
            )
        values = (
            -net.lr[index].double() * (keys * pseudo_keys.double()).sum(-1, keepdim=True)
            * pseudo_grads.double()
        )
        eye = torch.eye(module.key_size, dtype=torch.float64)
        residual = (
            (keys.T @ keys + net.log_ridge[index].double().exp() * eye)
            @ shifts[module.name].dense().double()
            - keys.T @ values
        )
        assert residual.abs().max() <= 1e-4 * (keys.T @ values).abs().max()
    assert ridge_solve(keys, values, torch.tensor(0.0, dtype=torch.float64)).shape == (
        module.key_size, 32
    )


def test_state_dict_round_trip_and_normaliser_updates_at_edit(micro_llama):
    ctx = make_context(micro_llama)
    method = MALMEN(MALMENConfig(edit_lr=1e-3, update_normaliser_at_edit=True), ctx)
    records = ctx.train_records()
    method.update_normalisers(method.read_keys_and_grads(records[:4]))
    before = method.state_dict()
    method.apply(records[4:8])
    after = method.state_dict()
    assert set(after) == set(before) and any(not torch.equal(after[k], before[k]) for k in after)
    other = MALMEN(MALMENConfig(edit_lr=1e-3), make_context(micro_llama))
    other.load_state_dict(after)
    assert all(torch.equal(other.state_dict()[k], after[k]) for k in after)
    with pytest.raises(ValueError, match="snapshot state"):
        other.load_state_dict({"nonsense": torch.zeros(1)})
    frozen = MALMEN(MALMENConfig(edit_lr=1e-3), make_context(micro_llama))
    frozen.load_state_dict(after)
    frozen.apply(records[8:12])
    assert all(torch.equal(frozen.state_dict()[k], after[k]) for k in after)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_keys_and_gradients_do_not_depend_on_the_batch_size(family, micro_llama, micro_gpt2):
    """A record's rows are the same whether it is edited in one batch of 20, two of 10 or four of 5:
    the normaliser is fitted at train_batch, editing runs at --batch-size (issue 14, point 1)."""
    ctx = make_context({"llama": micro_llama, "gpt2": micro_gpt2}[family])
    method = MALMEN(MALMENConfig(), ctx)
    records = ctx.train_records()[:20]
    by_size = {}
    for size in (20, 10, 5):
        parts = [method.read_keys_and_grads(records[s:s + size]) for s in range(0, 20, size)]
        by_size[size] = {m.name: (torch.cat([p.keys[m.name] for p in parts]),
                                  torch.cat([p.grads[m.name] for p in parts]))
                         for m in method.modules}
    for module in method.modules:
        keys, grads = by_size[20][module.name]
        assert grads.abs().max() > 0
        for size in (10, 5):
            other_keys, other_grads = by_size[size][module.name]
            assert torch.allclose(keys, other_keys, atol=1e-5, rtol=1e-4)
            assert torch.allclose(grads, other_grads, atol=1e-7, rtol=1e-3)


def test_tokens_all_reads_the_prompt_and_the_answer_without_its_last_token(micro_llama):
    """The releases feed prompt + answer[:-1] and read every input position (``token: all``), so
    there is no row for the answer's last token, whose gradient is zero."""
    ctx = make_context(micro_llama)
    records = ctx.train_records()[:3]
    observed = MEND(MENDConfig(tokens="all"), ctx).read_keys_and_grads(records)
    expected = sum(len(ctx.encoder.encode(r.prompt, r.target_new).ids) - 1 for r in records)
    for rows in observed.keys.values():
        assert rows.shape[0] == expected
    assert observed.groups == (expected,)


def test_release_sub_batches_are_length_sorted_with_one_token_mean_loss_each(micro_llama):
    from editbench.methods.objectives import token_mean_target_nll

    ctx = make_context(micro_llama)
    method = MALMEN(MALMENConfig(sub_batch=2), ctx)
    records = ctx.train_records()[:5]
    observed = method.read_keys_and_grads(records)
    lengths = [len(ctx.encoder.encode(r.prompt, r.target_new).ids) for r in records]
    order = sorted(range(5), key=lambda i: -lengths[i])
    parts = []
    for start in range(0, 5, 2):
        chunk = [records[i] for i in order[start:start + 2]]
        parts.append(keys_and_grads(
            ctx.model, method.modules, method.encode([(r.prompt, r.target_new) for r in chunk]),
            token_mean_target_nll
        ))
    assert observed.groups == tuple(p.groups[0] for p in parts) and len(observed.groups) == 3
    for module in method.modules:
        assert torch.allclose(
            observed.grads[module.name],
            torch.cat([p.grads[module.name] for p in parts]),
            atol=1e-7,
        )
    before = method.nets[next(iter(method.nets))].normaliser.count.item()
    release = MALMEN(MALMENConfig(sub_batch=2, normaliser="release"), ctx)
    release.update_normalisers(observed)
    net = release.nets[next(iter(release.nets))]
    assert net.normaliser.count.item() == sum(observed.groups) * len(method.modules) and before == 0


def test_the_run_seed_seeds_the_network_its_data_order_and_its_cached_editor(micro_llama, tmp_path):
    """A seed sweep must sample training variance: another seed draws other block weights, another
    train/validation split and another cache folder (one trained editor per seed)."""
    from editbench.methods.hypernet.training import Trainer

    methods = []
    for seed in (0, 1):
        ctx = make_context(micro_llama, tmp_path)
        ctx.seed = seed
        methods.append(MALMEN(MALMENConfig(), ctx))
    first, second = methods
    key = next(iter(first.nets))
    assert not torch.equal(first.nets[key].blocks[0].A, second.nets[key].blocks[0].A)
    assert first.cache_folder() != second.cache_folder()
    records = first.ctx.train_records()
    split = [[r.uid for r in Trainer(m, records, tmp_path / str(m.ctx.seed)).val] for m in methods]
    assert split[0] != split[1]
    again = MALMEN(MALMENConfig(), make_context(micro_llama, tmp_path))
    assert torch.equal(again.nets[key].blocks[0].A, first.nets[key].blocks[0].A)
