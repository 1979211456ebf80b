"""The shared locate-then-edit core: subject location, key statistics and their cache, target
values."""

import logging

import pytest
import torch
from conftest import tiny_world

from editbench.core.method import MethodSetupError
from editbench.core.models import ModelLayout, load_model
from editbench.core.records import EditRecord
from editbench.methods import EditContext
from editbench.methods.locate import stats as stats_module
from editbench.methods.locate.config import LocateConfig
from editbench.methods.locate.hooks import mean_keys, read_at
from editbench.methods.locate.prompts import locate, subject_last_index
from editbench.methods.locate.stats import Corpus, key_second_moments, resolve_corpus
from editbench.methods.locate.values import optimise_values


class TextTask:
    """The part of a task key statistics read: a name and plain text."""

    name = "tiny"

    def __init__(self, texts):
        self.texts = texts

    def corpus(self):
        return self.texts


def context(path, cache_dir, texts=None):
    model, tokenizer = load_model(path, torch.device("cpu"), torch.float32)
    task = TextTask(texts if texts is not None else tiny_world().training_sentences())
    return EditContext(
        model=model, tokenizer=tokenizer, layout=ModelLayout.of(model), device=torch.device("cpu"),
        cache_dir=cache_dir, task=task, seed=0, generator=torch.Generator().manual_seed(0)
    )


def token_keys(ctx, module, texts):
    """Inputs of ``module`` at every token of ``texts``, one unpadded forward pass per text."""
    captured = []
    handle = ctx.model.get_submodule(module).register_forward_hook(
        lambda _m, args, _o: captured.append(args[0][0])
    )
    with torch.no_grad():
        for text in texts:
            ctx.model(input_ids=torch.tensor([ctx.encoder.encode_prompt(text)]))
    handle.remove()
    return torch.cat(captured)


RECORDS = [
    EditRecord(uid="0", prompt="Fact: Kalo Mirve lives in", subject="Kalo Mirve",
               target_new="Fengal Vale"),
    EditRecord(uid="1", prompt="The profession of Danve Rusel is", subject="Danve Rusel",
               target_new="weaver"),
]


def test_subject_last_index_points_at_the_subjects_last_token(micro_llama, tmp_path):
    ctx = context(micro_llama, tmp_path)
    for record in RECORDS:
        ids = ctx.encoder.encode_prompt(record.prompt)
        index = subject_last_index(ctx.encoder, record.prompt, record.subject)
        assert ctx.tokenizer.decode(ids[: index + 1]).rstrip().endswith(record.subject)
        assert not ctx.tokenizer.decode(ids[:index]).rstrip().endswith(record.subject)
    with pytest.raises(ValueError, match="does not occur"):
        subject_last_index(ctx.encoder, "Fact: someone lives in", "Kalo Mirve")


def test_prefixed_rows_look_up_the_subject_after_the_prefix(micro_llama, tmp_path):
    ctx = context(micro_llama, tmp_path)
    record = EditRecord(uid="2", prompt="Kalo Mirve lives in", subject="Kalo Mirve", target_new="x")
    located = locate(ctx.encoder, [record], ["Kalo Mirve plays the harp. "], with_target=False)
    bare, prefixed = located.lookup.tolist()
    assert prefixed > bare  # the second mention, not the one inside the prefix


def test_mean_keys_weighs_bare_and_prefixed_contexts_equally():
    from editbench.core.tokenize import PairBatch
    from editbench.methods.locate.prompts import LocatedBatch

    empty = PairBatch(
        *(torch.zeros(5, 1, dtype=torch.long) for _ in range(4)), torch.zeros(5, dtype=torch.long)
    )
    located = LocatedBatch(empty, torch.zeros(5, dtype=torch.long), torch.tensor([0, 0, 0, 1, 1]),
                           torch.tensor([0, 1, 1, 0, 1]))
    keys = torch.tensor([[2.0], [4.0], [8.0], [1.0], [3.0]])
    assert mean_keys(keys, located, 2).tolist() == [[(2 + (4 + 8) / 2) / 2, (1 + 3) / 2]]


def test_second_moment_is_the_mean_outer_product_over_real_tokens(micro_model_path, tmp_path):
    ctx = context(micro_model_path, tmp_path)
    texts = tiny_world().training_sentences()[:40]
    module = ctx.layout.mlp_out_name(1)
    corpus = Corpus("t", texts)
    # tiny token budget: many padded batches of different widths
    small = key_second_moments(
        ctx.model, ctx.encoder, [module], corpus, 40, tmp_path / "a", ctx.device, 64
    )[module]
    every = token_keys(ctx, module, texts)
    assert small.n_tokens == every.shape[0] and small.n_samples == 40
    torch.testing.assert_close(small.mom2, every.T @ every / every.shape[0], rtol=1e-4, atol=1e-7)


def test_key_statistics_are_cached_and_reused(micro_llama, tmp_path, monkeypatch, caplog):
    ctx = context(micro_llama, tmp_path)
    corpus = resolve_corpus("auto", LocateConfig().stats_hub, ctx.task)
    modules = [ctx.layout.mlp_out_name(0), ctx.layout.mlp_out_name(2)]
    first = key_second_moments(ctx.model, ctx.encoder, modules, corpus, 300, tmp_path, ctx.device)
    assert all(s.n_samples == 300 and s.corpus == corpus.name for s in first.values())

    def recompute(*_args, **_kwargs):
        raise AssertionError("cached statistics were recomputed")

    monkeypatch.setattr(stats_module, "_accumulate", recompute)
    with caplog.at_level(logging.INFO, logger="editbench.methods.locate.stats"):
        second = key_second_moments(
            ctx.model, ctx.encoder, modules, corpus, 300, tmp_path, ctx.device
        )
    assert caplog.text.count("loaded cached key statistics from") == 2
    for module in modules:
        assert torch.equal(first[module].mom2, second[module].mom2)
    # another sample count is another statistic
    with pytest.raises(AssertionError, match="recomputed"):
        key_second_moments(ctx.model, ctx.encoder, modules, corpus, 200, tmp_path, ctx.device)
    with torch.no_grad():  # so is another model
        ctx.model.get_parameter(f"{ctx.layout.block_name(0)}.mlp.up_proj.weight").mul_(2)
    with pytest.raises(AssertionError, match="recomputed"):
        key_second_moments(ctx.model, ctx.encoder, modules, corpus, 300, tmp_path, ctx.device)


def test_corpus_choices(tmp_path):
    task = TextTask(["a b", "c d"])
    assert resolve_corpus("auto", "x/y:z", task).take(5) == ["a b", "c d"]
    hub = resolve_corpus("auto", "Salesforce/wikitext:wikitext-103-raw-v1", TextTask(None))
    assert hub.hub == ("Salesforce/wikitext", "wikitext-103-raw-v1") and hub.texts is None
    with pytest.raises(ValueError, match="supplies no text"):
        resolve_corpus("task", "x", TextTask(None))
    lines = tmp_path / "corpus.txt"
    lines.write_text("one line\n\nanother line\n")
    assert resolve_corpus(str(lines), "x", None).take(10) == ["one line", "another line"]
    with pytest.raises(ValueError, match="neither auto"):
        resolve_corpus(str(tmp_path / "missing.txt"), "x", None)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.txt:1: not UTF-8 text"):
        resolve_corpus(str(latin), "x", None)


def test_values_optimised_together_equal_values_optimised_one_by_one(micro_llama, tmp_path):
    ctx = context(micro_llama, tmp_path)
    config = LocateConfig(layers=(1,), v_steps=8, context_prefixes=0)
    block = ctx.layout.block_name(1)
    together = optimise_values(
        ctx.model, ctx.encoder, block, RECORDS, ["Hello there. "], config, ctx.device
    )
    alone = torch.cat([
        optimise_values(ctx.model, ctx.encoder, block, [r], ["Hello there. "], config, ctx.device)
        for r in RECORDS
    ])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    located = locate(ctx.encoder, RECORDS, (), with_target=False)
    _, before = read_at(ctx.model, located, block=block)
    assert (together - before).norm(dim=1).min() > 0  # the optimisation moved every value
    norms = (together - before).norm(dim=1) / before.norm(dim=1)
    assert bool((norms <= config.clamp_norm_factor + 1e-5).all())


def test_values_with_the_blocks_up_to_theirs_replayed_are_the_values_recomputed(
    micro_llama, tmp_path
):
    """With the layout, the blocks up to the value's block run at each chunk's first step only
    (``LowerBlocks.same_batch``); the delta is added to the replayed output as to the computed
    one, so the values are bitwise those of recomputing every step."""
    ctx = context(micro_llama, tmp_path)
    config = LocateConfig(layers=(1,), v_steps=6, v_stop_loss=1e-12, context_prefixes=0)
    block = ctx.layout.block_name(1)
    calls = []
    first = ctx.model.get_submodule(ctx.layout.mlp_out_name(0))
    handle = first.register_forward_hook(lambda *_: calls.append(1))
    try:
        recomputed = optimise_values(
            ctx.model, ctx.encoder, block, RECORDS, ["Hello there. "], config, ctx.device)
        recomputed_calls = len(calls)
        replayed = optimise_values(
            ctx.model, ctx.encoder, block, RECORDS, ["Hello there. "], config, ctx.device,
            ctx.layout)
    finally:
        handle.remove()
    assert recomputed_calls == 6 and len(calls) - recomputed_calls == 1
    assert torch.equal(replayed, recomputed)


def test_a_replayed_block_gives_its_own_output_to_the_hook_that_changes_it(micro_llama, tmp_path):
    """``same_batch`` records the block's own output, before any hook on the block changes it, so
    the hook (MEMIT's delta) acts once on the replay too, not on its own earlier result."""
    from editbench.methods.lower_blocks import LowerBlocks

    ctx = context(micro_llama, tmp_path)
    ids = torch.tensor([ctx.encoder.encode_prompt(RECORDS[0].prompt)])
    block = ctx.model.get_submodule(ctx.layout.block_name(1))
    handle = block.register_forward_hook(lambda _m, _a, output: output + 1.0)
    try:
        lower = LowerBlocks(ctx.model, ctx.layout, 2)
        with torch.no_grad():
            computed = lower.same_batch(lambda: ctx.model(input_ids=ids).logits)
            replayed = lower.same_batch(lambda: ctx.model(input_ids=ids).logits)
    finally:
        handle.remove()
    assert lower.whole is not None
    assert torch.equal(replayed, computed)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="layers"):
        LocateConfig(layers=())
    with pytest.raises(ValueError, match="v_lr"):
        LocateConfig(v_lr=0)
    with pytest.raises(ValueError, match="mom2_n_samples"):
        LocateConfig(mom2_n_samples=0)


def test_hub_corpus_without_datasets_says_what_to_do(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    corpus = resolve_corpus("hub", "Salesforce/wikitext:wikitext-103-raw-v1", None)
    with pytest.raises(MethodSetupError, match="stats_corpus=PATH"):
        corpus.take(10)


def test_value_steps_run_the_head_where_their_loss_reads_and_give_the_same_values(
    micro_llama, tmp_path, monkeypatch
):
    """The value steps' loss reads the logits at the rewrite prompts' target positions and at the
    KL prompts' subject position: the head runs there alone (``answer_positions.py``), and the
    values are those of a head over every position."""
    from editbench.methods.answer_positions import AnswerPositions
    from editbench.methods.locate import values

    ctx = context(micro_llama, tmp_path)
    config = LocateConfig(layers=(1,), v_steps=6, v_stop_loss=1e-12, context_prefixes=0)
    block = ctx.layout.block_name(1)
    widths = []
    ctx.model.get_output_embeddings().register_forward_hook(
        lambda _m, _args, logits: widths.append(logits.shape[1]))
    narrow = optimise_values(ctx.model, ctx.encoder, block, RECORDS, ["Hello there. "], config,
                             ctx.device, ctx.layout)
    narrow_widths = list(widths)
    monkeypatch.setattr(values, "narrowed",
                        lambda batch, reading=None: AnswerPositions(index=None, batch=batch))
    widths.clear()
    whole = optimise_values(ctx.model, ctx.encoder, block, RECORDS, ["Hello there. "], config,
                            ctx.device, ctx.layout)
    assert len(narrow_widths) == len(widths) == 6
    # the most target tokens of a rewrite prompt ("Fengal Vale"), against the longest prompt
    assert max(narrow_widths) < min(widths)
    assert torch.allclose(narrow, whole, rtol=1e-5, atol=1e-6)
