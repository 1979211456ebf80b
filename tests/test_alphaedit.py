"""AlphaEdit's null-space projection and what it guarantees, on micro models of both layouts."""

import pytest
import torch
from test_locate import RECORDS, context, token_keys

from editbench.core.configs import build_config
from editbench.methods.alphaedit import AlphaEdit, AlphaEditConfig, null_space_projection
from editbench.methods.locate.hooks import read_at
from editbench.methods.locate.prompts import locate

#: One sentence: fewer key tokens (17) than key dimensions (64, 128), so the keys leave a null space
#: with a clear spectral gap to the kept directions.
PRESERVED = ["Danve Rusel is a weaver."]


def low_rank_second_moment(d: int, rank: int, seed: int = 0) -> torch.Tensor:
    keys = torch.randn(d, rank, generator=torch.Generator().manual_seed(seed))
    return keys @ keys.T / rank


def test_projection_is_symmetric_idempotent_and_kills_preserved_directions():
    mom2 = low_rank_second_moment(48, 20)
    projection = null_space_projection(mom2, threshold=1e-4)
    torch.testing.assert_close(projection, projection.T)
    torch.testing.assert_close(projection @ projection, projection, atol=1e-5, rtol=1e-5)
    assert round(float(torch.trace(projection))) == 48 - 20  # rank of the null space
    assert float((projection @ mom2).norm() / mom2.norm()) < 1e-5


def _config(threshold: float, **extra) -> AlphaEditConfig:
    settings = dict(
        layers=(0, 1), v_steps=30, clamp_norm_factor=20.0, v_weight_decay=0.0, context_prefixes=0,
        nullspace_threshold=threshold, l2=1e-3, mom2_n_samples=200
    )
    return AlphaEditConfig(**{**settings, **extra})


def _relative_threshold(ctx, config: AlphaEditConfig) -> float:
    """A threshold between the zero and the non-zero eigenvalues of the micro model's key moments
    (its keys are far smaller than a trained model's, so the published 2e-2 would keep
    everything)."""
    probe = AlphaEdit(config, ctx)
    probe.prepare()
    top = max(float(torch.linalg.eigvalsh(s.mom2).max()) for s in probe.stats.values())
    return top * 1e-6


def test_outputs_on_preserved_keys_are_unchanged(micro_model_path, tmp_path):
    ctx = context(micro_model_path, tmp_path, texts=PRESERVED)
    config = _config(_relative_threshold(ctx, _config(1.0)))
    method = AlphaEdit(config, ctx)
    method.prepare()
    assert all(0 < float(torch.trace(p)) < p.shape[0] for p in method.projections.values())
    # from the unedited model
    keys_before = [token_keys(ctx, module, PRESERVED) for module in method.modules]
    outputs_before = [ctx.model.get_submodule(m)(k) for m, k in zip(method.modules, keys_before)]
    weights_before = [ctx.parameter(n).clone() for n in method.edited_parameters()]
    method.apply(RECORDS)
    for module, keys, before, weight in zip(
        method.modules, keys_before, outputs_before, weights_before
    ):
        assert not torch.equal(ctx.parameter(f"{module}.weight"), weight)  # the layer was edited
        after = ctx.model.get_submodule(module)(keys)
        assert float((after - before).norm() / before.norm()) < 1e-4


def test_edited_keys_accumulate_and_protect_earlier_edits(micro_llama, tmp_path):
    ctx = context(micro_llama, tmp_path)
    method = AlphaEdit(_config(1.0), ctx)  # threshold above every eigenvalue: P = I
    method.prepare()
    assert all(float(c.abs().sum()) == 0 for c in method.edited_keys.values())
    method.apply(RECORDS[:1])
    located = locate(ctx.encoder, RECORDS[:1], (), with_target=False)
    (k0, k1), _ = read_at(ctx.model, located, method.modules)
    torch.testing.assert_close(method.edited_keys[0], k0.T @ k0)
    torch.testing.assert_close(method.edited_keys[1], k1.T @ k1)
    # the same new edit written with and without the earlier keys in the objective
    earlier = torch.cat([k0, k0 + 0.1 * torch.randn_like(k0)]).T
    keys = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    residual = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    method.edited_keys[0] = earlier @ earlier.T
    remembered = (method.layer_delta(0, keys, residual) @ earlier).norm()
    method.edited_keys[0] = torch.zeros_like(method.edited_keys[0])
    forgotten = (method.layer_delta(0, keys, residual) @ earlier).norm()
    assert remembered < forgotten


def test_state_dict_round_trip(micro_gpt2, tmp_path):
    config = _config(1.0, v_steps=5)
    first = AlphaEdit(config, context(micro_gpt2, tmp_path))
    first.prepare()
    first.apply(RECORDS[:1])
    state = first.state_dict()
    assert {"edited_keys.0", "edited_keys.1", "key_stats.corpus"} <= set(state)
    resumed = AlphaEdit(config, context(micro_gpt2, tmp_path))
    resumed.prepare()
    with torch.no_grad():
        for name in first.edited_parameters():
            resumed.ctx.parameter(name).copy_(first.ctx.parameter(name))
    resumed.load_state_dict(state)
    for layer in first.layers:
        assert torch.equal(resumed.edited_keys[layer], first.edited_keys[layer])
    first.apply(RECORDS[1:])
    resumed.apply(RECORDS[1:])
    for name in first.edited_parameters():
        torch.testing.assert_close(resumed.ctx.parameter(name), first.ctx.parameter(name))
    with pytest.raises(ValueError, match="lacks edited_keys.1"):
        resumed.load_state_dict({k: v for k, v in state.items() if k != "edited_keys.1"})


def test_published_presets():
    assert set(AlphaEdit.presets) == {"gpt2-xl", "gpt-j-6b", "llama-3-8b", "gpt-j", "llama3-8b"}
    llama = build_config(
        AlphaEditConfig, {k: str(v) for k, v in AlphaEdit.presets["llama3-8b"].items()},
        owner="alphaedit@llama3-8b"
    )
    assert llama.layers == (4, 5, 6, 7, 8) and llama.v_steps == 25 and llama.v_lr == 0.1
    assert llama.nullspace_threshold == 2e-2 and llama.l2 == 10 and llama.mom2_n_samples == 100_000
    assert llama.context_prefixes == 5 and llama.stats_corpus == "hub"
    gpt2 = build_config(
        AlphaEditConfig, {k: str(v) for k, v in AlphaEdit.presets["gpt2-xl"].items()}, owner="x"
    )
    assert gpt2.layers == (13, 14, 15, 16, 17) and gpt2.v_steps == 20 and gpt2.v_lr == 0.5
    with pytest.raises(ValueError, match="nullspace_threshold"):
        AlphaEditConfig(nullspace_threshold=0)


def test_a_failed_run_resumes_to_the_uninterrupted_result(tmp_path, micro_llama, monkeypatch):
    """Lifelong state goes through the runner's snapshots: a run that stops after two checkpoints
    and is rerun scores every checkpoint as a run that never stopped."""
    import pandas as pd

    from editbench.core.store import load_results
    from editbench.harness.plan.resolve import resolve
    from editbench.harness.plan.settings import RunSpec
    from editbench.harness.running.runner import Runner

    params = {"pocket": {"n_entities": "20"},
              "alphaedit": {"layers": "0,1", "v_steps": "5", "context_prefixes": "1",
                            "mom2_n_samples": "300", "l2": "1e-5", "clamp_norm_factor": "20"}}

    def spec(out):
        return RunSpec(
            methods=("alphaedit",), task="pocket", model=str(micro_llama), edits=8, batch_size=2,
            checkpoints="2,4,6,8", device="cpu", params=params, out=out,
            cache_dir=tmp_path / "cache"
        )

    assert Runner(resolve(spec(tmp_path / "clean"))).run().ok
    calls = {"n": 0}
    apply = AlphaEdit.apply

    def fail_third(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("interrupted")
        apply(self, batch)

    monkeypatch.setattr(AlphaEdit, "apply", fail_third)
    assert not Runner(resolve(spec(tmp_path / "stopped"))).run().ok
    monkeypatch.setattr(AlphaEdit, "apply", apply)
    assert Runner(resolve(spec(tmp_path / "stopped"))).run().ok

    def scores(folder):
        return load_results(folder).scores().drop(columns="run_id").sort_values(
            ["n_edits", "position", "metric"]).reset_index(drop=True)

    stopped, clean = scores(tmp_path / "stopped"), scores(tmp_path / "clean")
    assert sorted(stopped["n_edits"].unique()) == [2, 4, 6, 8]
    pd.testing.assert_frame_equal(stopped, clean)
