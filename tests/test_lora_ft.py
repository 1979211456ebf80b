"""Continual LoRA fine-tuning (methods/lora_ft.py): an edit teaches its target, each turn's adapter
is merged as W + a s B A and leaves no adapter behind, the release's schedule, the missing-peft
refusal, and a killed run resumed equals an uninterrupted one."""

from __future__ import annotations

import math

import pytest
import torch

from editbench.core.method import MethodRef
from editbench.core.models import ModelLayout, load_model
from editbench.core.probe import HFProbe
from editbench.core.records import EditRecord, ScoringPair
from editbench.methods import EditContext
from editbench.methods.lora_ft import LoRAFT, LoRAFTConfig, schedule

peft = pytest.importorskip("peft")

RECORD = EditRecord(
    uid="0", prompt="Fact: Kalo Mirve lives in", subject="Kalo Mirve", target_new="Fengal Vale"
)


def _context(path, seed: int = 0) -> EditContext:
    model, tokenizer = load_model(path, torch.device("cpu"), torch.float32)
    return EditContext(
        model=model, tokenizer=tokenizer, layout=ModelLayout.of(model), device=torch.device("cpu"),
        cache_dir=path, task=None, seed=seed, generator=torch.Generator().manual_seed(seed)
    )


def _logprob(ctx: EditContext) -> float:
    probe = HFProbe(ctx.model, ctx.tokenizer, ctx.device)
    return probe.score([ScoringPair(RECORD.prompt, RECORD.target_new)])[0].logprob


def test_an_edit_raises_the_targets_probability(micro_model_path):
    ctx = _context(micro_model_path)
    before = _logprob(ctx)
    LoRAFT(LoRAFTConfig(lr=1e-2, epochs=30, rank=8, alpha=16, merge_alpha=1.0,
                        dropout=0.0), ctx).apply([RECORD])
    after = _logprob(ctx)
    # a margin of several nats: the target's probability rises many times over
    assert after > before + 2.0, (before, after)


def test_merging_leaves_no_adapter_and_adds_alpha_scale_b_a(micro_model_path, monkeypatch):
    ctx = _context(micro_model_path)
    loaded = {n: p.detach().clone() for n, p in ctx.model.named_parameters()}
    flags = {n: p.requires_grad for n, p in ctx.model.named_parameters()}
    config = LoRAFTConfig(lr=1e-2, epochs=3, warmup=0.0, merge_alpha=0.25)
    method = LoRAFT(config, ctx)
    seen: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
    delta = LoRAFT._delta

    def spy(self, layer):
        name = next(n for n, m in ctx.model.named_modules() if m is layer)
        seen[name] = (layer.lora_A["default"].weight.detach().clone(),
                      layer.lora_B["default"].weight.detach().clone(), layer.scaling["default"])
        return delta(self, layer)

    monkeypatch.setattr(LoRAFT, "_delta", spy)
    method.apply([RECORD])
    assert not any(isinstance(m, peft.tuners.lora.LoraLayer) for m in ctx.model.modules())
    assert set(dict(ctx.model.named_parameters())) == set(loaded)
    assert not hasattr(ctx.model, "peft_config")
    assert {n: p.requires_grad for n, p in ctx.model.named_parameters()} == flags
    changed = {n for n, p in ctx.model.named_parameters() if not torch.equal(p, loaded[n])}
    assert changed == set(method.edited_parameters())
    assert seen.keys() == {n.removesuffix(".weight") for n in changed}
    conv1d = ctx.layout.family.conv1d
    for name, (a, b, scale) in seen.items():
        assert scale == config.alpha / config.rank
        expected = 0.25 * scale * (b @ a)
        got = ctx.model.get_parameter(f"{name}.weight") - loaded[f"{name}.weight"]
        got = got.T if conv1d else got
        assert expected.abs().max() > 0
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_each_turn_trains_a_fresh_adapter_on_the_merged_weights(micro_llama):
    ctx = _context(micro_llama)
    method = LoRAFT(LoRAFTConfig(lr=1e-2, epochs=2, warmup=0.0), ctx)
    name = method.edited_parameters()[0]
    first = ctx.model.get_parameter(name).detach().clone()
    method.apply([RECORD])
    once = ctx.model.get_parameter(name).detach().clone()
    method.apply([RECORD])
    twice = ctx.model.get_parameter(name).detach()
    assert not torch.equal(first, once) and not torch.equal(once, twice)
    assert not any("lora" in n for n, _ in ctx.model.named_parameters())


def test_the_schedule_is_the_releases():
    # ten epochs, a tenth of warm-up: the first epoch at 0, then a cosine from 1 to about 0
    factors = [schedule(e, 10, 1) for e in range(10)]
    assert factors[0] == 0.0
    assert factors[1] == pytest.approx(1.0, abs=1e-5)
    assert all(a > b for a, b in zip(factors[1:], factors[2:]))
    assert factors[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 8 / 9)), abs=1e-5)
    assert schedule(0, 5, 0) == pytest.approx(1.0, abs=1e-5)


def test_the_wikibigedit_preset_holds_the_releases_settings():
    config = MethodRef.parse("lora-ft@wikibigedit").config({})
    assert (config.rank, config.alpha, config.dropout) == (4, 8.0, 0.1)
    assert config.target_modules == ("q_proj", "v_proj")
    assert config.lr == pytest.approx(5e-3 * 32 / 256)
    assert (config.epochs, config.chunk, config.merge_alpha) == (10, 32, 0.25)


def test_without_peft_it_refuses_in_one_line_naming_the_extra(micro_llama, monkeypatch):
    import importlib.util

    from editbench.harness.plan.resolve import default_methods

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "peft" else real(name, *a))
    method = LoRAFT(LoRAFTConfig(), _context(micro_llama))
    (line,) = method.requirements()
    assert "\n" not in line and 'pip install "editbench[lora]"' in line and "peft" in line
    assert "lora-ft" not in default_methods()


def test_the_default_run_leaves_it_out_and_says_why(caplog):
    """It costs the default run about 17 s (docs/benchmarks.md), over its budget's room."""
    import logging

    from editbench.harness.plan.resolve import default_methods

    with caplog.at_level(logging.INFO):
        methods = default_methods()
    assert "lora-ft" not in methods and "retrieval" in methods
    assert "--methods lora-ft" in caplog.text


def test_a_target_module_the_model_lacks_is_named(micro_llama):
    from editbench.core.method import MethodSetupError

    method = LoRAFT(LoRAFTConfig(target_modules=("nowhere",)), _context(micro_llama))
    with pytest.raises(MethodSetupError, match="target_modules nowhere"):
        method.edited_parameters()


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="merge_alpha"):
        LoRAFTConfig(merge_alpha=0.0)
    with pytest.raises(ValueError, match="rank"):
        LoRAFTConfig(rank=0)
