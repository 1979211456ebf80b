"""Key statistics that finish: the forward pass stops at the last needed layer, progress is logged,
sums are float32 whatever the model's dtype, and the MEMIT/ROME and AlphaEdit releases' files
import."""

import logging

import numpy as np
import pytest
import torch
from conftest import tiny_world
from test_locate import RECORDS, TextTask, context, token_keys

from editbench.core.models import ModelLayout, load_model
from editbench.methods import EditContext
from editbench.methods.alphaedit import AlphaEdit, AlphaEditConfig, null_space_projection
from editbench.methods.locate import editor as editor_module
from editbench.methods.locate.published import find_release_stats, read_null_space_projection
from editbench.methods.locate.stats import Corpus, key_second_moments
from editbench.methods.memit import MEMIT, MEMITConfig

TEXTS = tiny_world().training_sentences()[:60]


def count_calls(model, names):
    calls = {name: 0 for name in names}
    handles = [model.get_submodule(name).register_forward_pre_hook(
        lambda _m, _args, name=name: calls.__setitem__(name, calls[name] + 1)) for name in names]
    return calls, handles


def test_the_forward_pass_stops_after_the_last_layer_needed(micro_model_path, tmp_path):
    ctx = context(micro_model_path, tmp_path)
    layout = ctx.layout
    needed = [layout.mlp_out_name(0), layout.mlp_out_name(1)]
    above = [layout.block_name(2), "lm_head"]
    calls, handles = count_calls(ctx.model, [layout.block_name(1), *above])
    found = key_second_moments(
        ctx.model, ctx.encoder, needed, Corpus("t", TEXTS), 60, tmp_path, ctx.device, 128
    )
    for handle in handles:
        handle.remove()
    assert calls[layout.block_name(1)] > 1  # several batches ran up to the last needed layer...
    assert all(calls[name] == 0 for name in above), calls  # ...and never past it
    every = token_keys(ctx, needed[1], TEXTS)  # full unpadded passes give the same statistics
    torch.testing.assert_close(
        found[needed[1]].mom2, every.T @ every / every.shape[0], rtol=1e-4, atol=1e-7
    )
    assert not any(m._forward_hooks for m in ctx.model.modules())  # no hook outlives the pass


def test_progress_is_logged_in_tokens_with_rate_and_time_left(
    micro_llama, tmp_path, caplog, monkeypatch
):
    from editbench.core import progress

    monkeypatch.delenv("EDITBENCH_NO_PROGRESS", raising=False)
    monkeypatch.setenv("EDITBENCH_PROGRESS_EVERY", "0")
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    ctx = context(micro_llama, tmp_path)
    module = ctx.layout.mlp_out_name(0)
    with caplog.at_level(logging.INFO):
        found = key_second_moments(
            ctx.model, ctx.encoder, [module], Corpus("t", TEXTS), 60, tmp_path, ctx.device, 64
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "editbench.core.progress"]
    total = found[module].n_tokens
    assert (
        len(lines) > 2
        and lines[0].startswith("key statistics: ")
        and f"/{total} tokens (" in lines[0]
    )
    assert "tokens/s" in lines[0] and "to go" in lines[0]
    assert lines[-1].startswith(f"key statistics: {total}/{total} tokens (100%)")


def test_bf16_model_statistics_are_float32_sums_matching_a_float64_reference(micro_llama, tmp_path):
    model, tokenizer = load_model(micro_llama, torch.device("cpu"), torch.bfloat16)
    ctx = EditContext(
        model=model, tokenizer=tokenizer, layout=ModelLayout.of(model), device=torch.device("cpu"),
        cache_dir=tmp_path, task=TextTask(TEXTS), seed=0, generator=torch.Generator().manual_seed(0)
    )
    module = ctx.layout.mlp_out_name(1)
    texts = TEXTS * 4  # more tokens: a bf16 running sum would drift further
    found = key_second_moments(
        model, ctx.encoder, [module], Corpus("t", texts), 240, tmp_path, ctx.device, 64
    )[module]
    keys = token_keys(ctx, module, texts)
    assert keys.dtype == torch.bfloat16 and found.mom2.dtype == torch.float32
    reference = keys.double().T @ keys.double() / keys.shape[0]
    torch.testing.assert_close(found.mom2.double(), reference, rtol=1e-5, atol=1e-7)
    # what accumulating in the model's dtype gives
    bf16_sum = sum(k.T @ k for k in keys.split(64)) / keys.shape[0]
    assert not torch.allclose(bf16_sum.double(), reference, rtol=1e-5, atol=1e-7)


def write_release_stats(path, mom2_sum, count, sample_size=100_000, precision=np.float32):
    """A file as kmeng01/memit util/runningstats.py saves a CombinedStat(mom2=SecondMoment())."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{"mom2.constructor": np.array("util.runningstats.SecondMoment()"),
                      "mom2.count": count, "mom2.mom2": mom2_sum.astype(precision),
                      "sample_size": sample_size})


def release_file(
    root, model_folder, module, samples=100_000, dataset="wikipedia", precision="float32"
):
    return root / model_folder / f"{dataset}_stats" / f"{module}_{precision}_mom2_{samples}.npz"


@pytest.fixture
def memit_ctx(micro_llama, tmp_path):
    return context(micro_llama, tmp_path / "cache", TEXTS)


def test_memit_edits_with_the_release_statistics_as_with_its_own(memit_ctx, tmp_path):
    """Statistics written in the release's format and imported give the same edit as computing
    them."""
    ctx = memit_ctx
    config = MEMITConfig(layers=(0, 1), v_steps=3, mom2_n_samples=60)
    own = MEMIT(config, ctx)
    own.prepare()
    root = tmp_path / "data" / "stats"
    for layer, module in zip(own.layers, own.modules):
        stats = own.stats[layer]
        total = stats.mom2.double().numpy() * stats.n_tokens  # the release stores the sum
        write_release_stats(
            release_file(root, "micro_llama", module, 60), total, stats.n_tokens, 60
        )
    # another size
    write_release_stats(
        release_file(root, "micro_llama", own.modules[0], 1000), np.eye(64), 5, 1000
    )
    imported = MEMIT(MEMITConfig(**{**config.__dict__, "stats_import": str(root)}), ctx)
    imported.prepare()
    for layer in own.layers:
        torch.testing.assert_close(imported.stats[layer].mom2, own.stats[layer].mom2)
        assert imported.stats[layer].n_tokens == own.stats[layer].n_tokens
        assert (
            imported.stats[layer].n_samples == 60
            and imported.stats[layer].corpus.startswith("release-wikipedia_stats")
        )
    keys = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    residual = torch.randn(32, 2, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(
        imported.layer_delta(0, keys, residual), own.layer_delta(0, keys, residual)
    )


def test_release_file_discovery_follows_its_naming(tmp_path):
    module = "model.layers.4.mlp.down_proj"
    root = tmp_path / "stats"
    memit_name = release_file(root, "meta-llama_Meta-Llama-3-8B", module)  # MEMIT: '/' becomes '_'
    # AlphaEdit: the last path component
    alphaedit_name = release_file(root, "Mistral-7B-v0.1", module)
    for path in (memit_name, alphaedit_name):
        write_release_stats(path, np.eye(3), 1)
    assert find_release_stats(root, module, 100_000, "meta-llama/Meta-Llama-3-8B") == memit_name
    assert find_release_stats(root, module, 100_000, "mistralai/Mistral-7B-v0.1") == alphaedit_name
    with pytest.raises(
        ValueError, match="several statistics files for model.layers.4.mlp.down_proj"
    ):
        find_release_stats(root, module, 100_000, "other/model")
    literal = (
        root / "m" / "wikitext_stats"
        / "transformer.h.17.mlp.c_proj_float64_mean-mom2_t{batch_tokens}_5000.npz"
    )
    # the release writes '_t{batch_tokens}' literally
    write_release_stats(literal, np.eye(3), 1, 5000)
    assert find_release_stats(root, "transformer.h.17.mlp.c_proj", 5000) == literal
    with pytest.raises(ValueError, match=r"no file model.layers.5.mlp.down_proj_<precision>_mom2"):
        find_release_stats(root, "model.layers.5.mlp.down_proj", 100_000)
    with pytest.raises(ValueError, match="is not a folder"):
        find_release_stats(tmp_path / "absent", module, 100_000)


def test_release_statistics_that_do_not_fit_the_model_are_one_line_errors(memit_ctx, tmp_path):
    root = tmp_path / "stats"
    module = memit_ctx.layout.mlp_out_name(0)
    path = release_file(root, "x", module)
    config = MEMITConfig(layers=(0,), stats_import=str(root))
    write_release_stats(path, np.eye(48), 10)  # the micro model's keys are 64 wide
    with pytest.raises(ValueError) as error:
        MEMIT(config, memit_ctx).prepare()
    assert str(error.value) == (
        f"{path}: mom2 is 48x48 but {module} takes 64-wide keys (64x64 expected); "
        "these statistics are of another model or layer"
    )
    np.savez(path, **{"mom2": np.eye(64)})  # a mom2 without the release's key names
    with pytest.raises(
        ValueError, match=rf"^{path}: not MEMIT/ROME layer statistics: lacks mom2.mom2, mom2.count "
    ):
        MEMIT(config, memit_ctx).prepare()


def test_alphaedit_uses_the_release_projection_file(memit_ctx, tmp_path, monkeypatch):
    ctx = memit_ctx
    own = AlphaEdit(AlphaEditConfig(layers=(0, 1), v_steps=3, mom2_n_samples=60), ctx)
    own.prepare()
    release = torch.stack(
        [null_space_projection(own.stats[layer].mom2, 0.5) for layer in own.layers]
    )
    path = tmp_path / "null_space_project.pt"
    torch.save(release, path)  # as jianghoucheng/AlphaEdit experiments/evaluate.py saves P

    def no_statistics(*_args, **_kwargs):
        raise AssertionError("statistics were computed although the projection was given")

    monkeypatch.setattr(editor_module, "key_second_moments", no_statistics)
    imported = AlphaEdit(AlphaEditConfig(layers=(0, 1), v_steps=3, projection_file=str(path),
                                         nullspace_threshold=9.0), ctx)  # threshold unused
    imported.prepare()
    for layer in own.layers:
        torch.testing.assert_close(imported.projections[layer], own.projections[layer])
    assert imported.state_dict()["key_stats.samples"].tolist() == [0, 0]
    imported.apply(RECORDS[:1])
    with pytest.raises(
        ValueError,
        match=(
            rf"^{path}: holds a 2x64x64 tensor, but AlphaEdit's null_space_project.pt "
            r"for layers 0,1,2 of this model is 3x64x64"
        ),
    ):
        read_null_space_projection(path, (0, 1, 2), 64)
    torch.save({"P": release}, path)
    with pytest.raises(ValueError, match=rf"^{path}: holds a dict, but"):
        read_null_space_projection(path, (0, 1), 64)


def test_cost_of_llama_3_8b_statistics_follows_the_published_shapes():
    from test_architectures import meta_model

    from editbench.methods.locate.config import LocateConfig
    from editbench.methods.locate.cost import key_stats_cost

    # hidden 4096, MLP 14336, 8 KV heads of 128, 32 layers, context 8192
    model = meta_model("llama-3-8b")
    config = LocateConfig(layers=(4, 5, 6, 7, 8), mom2_n_samples=100_000)
    bound = key_stats_cost(model, config)
    assert (bound.layers_run, bound.layers_total) == (9, 32)
    assert bound.tokens == 100_000 * 8192 and bound.tokens_is_upper_bound
    assert bound.matrix_bytes == 5 * 14336 * 14336 * 4  # 4.1 GB of float32 second moments
    assert bound.batch_key_bytes == 8192 * 14336 * 4
    # q,o; k,v; gate,up,down; two norms
    block = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    assert bound.flops_per_token == 2 * 9 * block
    measured = key_stats_cost(model, config, mean_tokens=600.5)
    assert measured.tokens == 60_050_000 and not measured.tokens_is_upper_bound
    assert measured.seconds(1e12) == pytest.approx(60_050_000 * 2 * 9 * block / 1e12)
    imported = key_stats_cost(model, LocateConfig(layers=(4, 5), stats_import="/stats"))
    assert imported.tokens == imported.layers_run == imported.matrix_bytes == 0
    with pytest.raises(ValueError, match="must lie in"):
        key_stats_cost(model, config, mean_tokens=9000)


def test_cost_of_gpt2_xl_reads_conv1d_key_widths():
    from test_architectures import meta_model

    from editbench.methods.locate.config import LocateConfig
    from editbench.methods.locate.cost import key_stats_cost

    cost = key_stats_cost(meta_model("gpt2-xl"), LocateConfig(layers=(13, 14, 15, 16, 17)))
    assert (
        cost.matrix_bytes == 5 * 6400 * 6400 * 4
        and (cost.layers_run, cost.layers_total) == (18, 48)
    )
    # GPT-2's context cuts samples before the token budget does
    assert cost.tokens == 100_000 * 1024


def test_cost_predicts_the_tokens_and_layers_a_micro_model_run_streams(micro_llama, tmp_path):
    from editbench.methods.locate.config import LocateConfig
    from editbench.methods.locate.cost import key_stats_cost, max_sample_tokens, mean_sample_tokens

    ctx = context(micro_llama, tmp_path)
    # cuts long samples
    config = LocateConfig(layers=(0, 1), mom2_n_samples=len(TEXTS), stats_batch_tokens=16)
    mean = mean_sample_tokens(ctx.encoder, TEXTS, max_sample_tokens(ctx.model, config))
    cost = key_stats_cost(ctx.model, config, mean)
    blocks = [ctx.layout.block_name(i) for i in range(ctx.layout.n_layers)]
    calls, handles = count_calls(ctx.model, blocks)
    modules = [ctx.layout.mlp_out_name(layer) for layer in config.layers]
    found = key_second_moments(
        ctx.model, ctx.encoder, modules, Corpus("t", TEXTS), config.mom2_n_samples, tmp_path,
        ctx.device, config.stats_batch_tokens
    )
    for handle in handles:
        handle.remove()
    assert max(len(ctx.encoder.encode_prompt(t)) for t in TEXTS) > 16  # the cut matters here
    assert cost.tokens == found[modules[0]].n_tokens
    assert cost.layers_run == sum(calls[b] > 0 for b in blocks) == 2
    assert cost.matrix_bytes == sum(s.mom2.numel() * s.mom2.element_size() for s in found.values())
