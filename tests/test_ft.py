import pytest
import torch

from editbench.core.models import ModelLayout, load_model
from editbench.core.probe import HFProbe
from editbench.core.records import EditRecord, ScoringPair
from editbench.core.tokenize import PairEncoder
from editbench.methods import EditContext
from editbench.methods.ft import FTL, FTM, FTConfig
from editbench.methods.objectives import last_prompt_position_nll, masked_target_nll


def _context(path):
    model, tokenizer = load_model(path, torch.device("cpu"), torch.float32)
    return EditContext(
        model=model, tokenizer=tokenizer, layout=ModelLayout.of(model), device=torch.device("cpu"),
        cache_dir=path, task=None, seed=0, generator=torch.Generator().manual_seed(0)
    )


RECORD = EditRecord(
    uid="0", prompt="Fact: Kalo Mirve lives in", subject="Kalo Mirve", target_new="Fengal Vale"
)


def test_ft_m_edit_makes_the_target_the_argmax(micro_model_path):
    ctx = _context(micro_model_path)
    probe = HFProbe(ctx.model, ctx.tokenizer, ctx.device)
    pair = ScoringPair(RECORD.prompt, RECORD.target_new)
    assert probe.score([pair])[0].token_accuracy < 1.0
    method = FTM(FTConfig(lr=2e-2, steps=300, stop_loss=1e-3), ctx)
    names = method.edited_parameters()
    before = {n: p.clone() for n, p in ctx.model.named_parameters()}
    method.apply([RECORD])
    assert probe.score([pair])[0].token_accuracy == 1.0
    changed = {n for n, p in ctx.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(names)


def test_norm_constraint_bounds_every_weight_change(micro_llama):
    ctx = _context(micro_llama)
    method = FTL(FTConfig(lr=1.0, steps=5, norm_constraint=1e-3), ctx)
    (name,) = method.edited_parameters()  # a Llama MLP projection has no bias
    before = ctx.parameter(name).clone()
    method.apply([RECORD])
    delta = (ctx.parameter(name) - before).abs().max()
    assert 0 < delta <= 1e-3 + 1e-7


def _batch(world_tokenizer):
    encoder = PairEncoder(world_tokenizer)
    return encoder.collate(
        [encoder.encode(RECORD.prompt, RECORD.target_new), encoder.encode("x lives", "in y")]
    )


def test_ft_m_loss_ignores_prompt_tokens(world_tokenizer):
    batch = _batch(world_tokenizer)
    logits = torch.randn(*batch.input_ids.shape, len(world_tokenizer), requires_grad=True)
    masked_target_nll(logits, batch).backward()
    grad_norm_per_position = logits.grad.abs().sum(-1)
    assert torch.all(grad_norm_per_position[~batch.target_mask] == 0)
    assert torch.all(grad_norm_per_position[batch.target_mask] > 0)


def test_ft_l_loss_reads_only_the_last_prompt_position(world_tokenizer):
    batch = _batch(world_tokenizer)
    logits = torch.randn(*batch.input_ids.shape, len(world_tokenizer), requires_grad=True)
    last_prompt_position_nll(logits, batch).backward()
    used = logits.grad.abs().sum(-1) > 0
    expected = torch.zeros_like(used)
    expected[torch.arange(2), batch.prompt_last] = True
    assert torch.equal(used, expected)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="norm_constraint"):
        FTConfig(norm_constraint=0)


def test_the_module_bias_is_tuned_where_it_has_one(micro_gpt2, micro_llama):
    assert FTM(FTConfig(), _context(micro_gpt2)).edited_parameters() == \
        ["transformer.h.2.mlp.c_proj.weight", "transformer.h.2.mlp.c_proj.bias"]
    # ROME's FT-L: layer 0
    assert FTL(FTL.Config(), _context(micro_gpt2)).edited_parameters() == \
        ["transformer.h.0.mlp.c_proj.weight", "transformer.h.0.mlp.c_proj.bias"]
    assert FTM(FTConfig(bias=False), _context(micro_gpt2)).edited_parameters() == \
        ["transformer.h.2.mlp.c_proj.weight"]
    assert FTM(FTConfig(), _context(micro_llama)).edited_parameters() == \
        ["model.layers.2.mlp.down_proj.weight"]


@pytest.mark.parametrize("chunk, steps_per_epoch", [(1, 4), (3, 2), (0, 1)])
def test_one_adam_step_per_chunk_of_the_batch_in_every_epoch(
    micro_llama, monkeypatch, chunk, steps_per_epoch
):
    """EasyEdit's and ROME's loop: ``steps`` epochs, one Adam step per chunk of ``chunk``
    records."""
    ctx = _context(micro_llama)
    records = [EditRecord(uid=str(i), prompt=f"Fact: Kalo {i} lives in", subject=f"Kalo {i}",
                          target_new="Fengal Vale")
               for i in range(4)]
    taken = {"n": 0}
    step = torch.optim.Adam.step

    def counting(self, *args, **kwargs):
        taken["n"] += 1
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counting)
    FTM(FTConfig(steps=3, chunk=chunk, stop_loss=0.0), ctx).apply(records)
    assert taken["n"] == 3 * steps_per_epoch


def test_defaults_follow_easyedit_and_rome_and_models_get_their_published_settings():
    from editbench.core.method import MethodRef

    ftm = MethodRef.parse("ft-m").config({})
    assert (ftm.lr, ftm.steps, ftm.chunk, ftm.norm_constraint, ftm.layer) == (
        5e-4, 25, 1, None, None
    )
    ftl = MethodRef.parse("ft-l").config({})
    assert (ftl.layer, ftl.chunk, ftl.norm_constraint) == (0, 128, 2e-2)
    assert MethodRef.parse("ft-m").config({}, "llama-3-8b").layer == 21
    assert MethodRef.parse("ft-m").config({}, "mistral-7b").norm_constraint == 5e-5
    # ROME's constrained FT-L
    assert MethodRef.parse("ft-l").config({}, "gpt-j-6b").norm_constraint == 5e-5
    assert MethodRef.parse("ft-l").config(
        {"ft-l": {"norm_constraint": "1e-3"}}, "gpt-j-6b"
    ).norm_constraint == 1e-3
    old = MethodRef.parse("ft-m@constrained").config({})
    assert (old.lr, old.chunk, old.norm_constraint, old.bias) == (5e-3, 0, 2e-2, False)


@pytest.mark.parametrize(("method", "settings", "exact"), [
    ("ft-m", {"layer": 1, "chunk": 1}, True),  # EasyEdit's loop: each chunk again in each epoch
    ("ft-l", {"layer": 1, "chunk": 3}, True),  # ROME's: chunks of a fixed order
    # breadth-first, but a batch within one mini-batch is the same step every epoch
    ("locft-bf", {"layer": 1, "chunk": 100}, True),
    ("locft-bf", {"layer": 1, "chunk": 2}, False),  # else a fresh order, and fresh chunks of it
])
def test_replayed_lower_blocks_give_the_edit_that_recomputing_them_gives(
        method, settings, exact, micro_model_path, monkeypatch):
    """The blocks below the tuned layer run for a record once per batch, not once per epoch, and
    the edit is the one the releases' recomputation gives: bitwise where a chunk repeats in its
    order, within float rounding where the order is reshuffled."""
    from editbench.core.method import METHODS
    from editbench.methods import lower_blocks

    records = [EditRecord(uid=str(i), prompt=f"Fact: Kalo {i} lives in", subject=f"Kalo {i}",
                          target_new="Fengal Vale" if i % 2 else "Orr")
               for i in range(6)]

    def edit(replay: bool) -> tuple[dict[str, torch.Tensor], int]:
        ctx = _context(micro_model_path)
        cls = METHODS[method]
        instance = cls(cls.Config(**{**settings, "steps": 4, "stop_loss": 0.0, "lr": 1e-2}), ctx)
        # the lowest block's MLP runs only when the block computes (counted in its forward, not
        # by a hook: a hook on a module the direct path skips would keep the model's forward)
        first = ctx.model.get_submodule(ctx.layout.mlp_out_name(0))
        calls, inside = [], []
        projection = first.forward
        first.forward = lambda *args: (calls.append(1), projection(*args))[1]
        # the tuned layer's attention runs before its MLP's output projection: replayed too
        tuned_block = ctx.model.get_submodule(ctx.layout.block_name(1))
        attention = next(m for name, m in tuned_block.named_children() if "attn" in name)
        # a module inside it (a replayed module's own hooks still run on its replayed output)
        next(attention.children()).register_forward_hook(lambda *_: inside.append(1))
        # the embeddings, computed before the first block from the tokens alone: replayed as well
        # (a replay stands in for the module's forward, which this wrapper is)
        embeddings, embedded = ctx.model.get_input_embeddings(), []
        looked_up = embeddings.forward
        embeddings.forward = lambda *args: (embedded.append(1), looked_up(*args))[1]
        # and once a chunk is recorded, the blocks from the tuned one up are called directly
        # (``upper_blocks.py``): the model's own forward no longer runs
        passes, model_forward = [], ctx.model.forward
        ctx.model.forward = lambda *a, **k: (passes.append(1), model_forward(*a, **k))[1]
        if not replay:
            monkeypatch.setattr(lower_blocks.LowerBlocks, "__call__",
                                lambda self, keys, lengths, forward: forward())
        instance.apply(records)
        monkeypatch.undo()
        names = instance.edited_parameters()
        return ({n: ctx.model.get_parameter(n).detach().clone() for n in names}, len(calls),
                len(inside), len(embedded), len(passes))

    recomputed, recomputed_calls, recomputed_inside, recomputed_embedded, recomputed_passes = (
        edit(False))
    replayed, replayed_calls, replayed_inside, replayed_embedded, replayed_passes = edit(True)
    chunks = -(-len(records) // settings["chunk"])
    assert recomputed_calls == recomputed_inside == recomputed_embedded == 4 * chunks
    assert recomputed_passes == 4 * chunks
    assert replayed_calls == chunks  # the first epoch's passes only
    if exact:  # a chunk that comes again in a fixed order is recorded on its first pass
        assert replayed_embedded == replayed_passes == chunks
        # and the direct path's one trial on this model computes the tuned block once more
        assert replayed_inside == chunks + 1
    else:  # reshuffled chunks never repeat: the model's forward every time, but the tuned
        # block's calls before the tuned module return each record's rows from the first epoch
        # (a chunk that comes again by chance is recorded whole, and the direct path's one trial
        # on this model may compute the tuned block once more)
        assert replayed_passes <= 4 * chunks
        assert chunks <= replayed_inside <= chunks + 1
    original = _context(micro_model_path).model
    for name, tensor in replayed.items():
        assert not torch.equal(tensor, original.get_parameter(name))
        if exact:
            assert torch.equal(tensor, recomputed[name]), name
        else:
            assert torch.allclose(tensor, recomputed[name], rtol=1e-5, atol=1e-7), name


def test_per_record_rows_stop_being_kept_at_their_byte_budget(micro_model_path, monkeypatch):
    """LocFT-BF's reshuffled mini-batches replay the tuned block's first calls from each record's
    rows, kept up to ``ROW_BYTES``: with no budget nothing is kept and every pass computes them."""
    from editbench.core.method import METHODS
    from editbench.methods import lower_blocks

    records = [EditRecord(uid=str(i), prompt=f"Fact: Kalo {i} lives in", subject=f"Kalo {i}",
                          target_new="Orr") for i in range(6)]
    counts = {}
    for budget in ("default", "none"):
        if budget == "none":
            monkeypatch.setattr(lower_blocks, "ROW_BYTES", 0)
        ctx = _context(micro_model_path)
        cls = METHODS["locft-bf"]
        tuned_block = ctx.model.get_submodule(ctx.layout.block_name(1))
        attention = next(m for name, m in tuned_block.named_children() if "attn" in name)
        inside = []
        next(attention.children()).register_forward_hook(
            lambda *_, calls=inside: calls.append(1))
        cls(cls.Config(layer=1, chunk=2, steps=4, stop_loss=0.0), ctx).apply(records)
        counts[budget] = len(inside)
    # 3 mini-batches an epoch: the first epoch's, and the direct path's one trial at most
    assert counts["default"] <= 3 + 1 < counts["none"]
