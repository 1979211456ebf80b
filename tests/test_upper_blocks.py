"""The blocks from a tuned layer up, called directly once a repeated batch is recorded
(``methods/upper_blocks.py``): the same training, bitwise, without the model's own forward; the
model's forward kept wherever the path could differ."""

from __future__ import annotations

import json

import pytest
import torch

from editbench.core.models import ModelLayout, load_model
from editbench.core.tokenize import PairEncoder
from editbench.methods import upper_blocks
from editbench.methods.lower_blocks import LowerBlocks
from editbench.methods.objectives import masked_target_nll

STEPS = 6


@pytest.fixture(params=["llama", "gpt2", "mistral", "gemma", "gemma2"])
def family_model(request, micro_llama, micro_gpt2, world_tokenizer, tmp_path):
    """A micro model of each family; Gemma 2 soft-caps its logits after the head (its default
    ``final_logit_softcapping``), which the direct path does not do."""
    from conftest import save_micro_gemma2, save_micro_model

    if request.param == "gemma2":
        path = save_micro_gemma2(world_tokenizer, tmp_path)
        assert json.loads((path / "config.json").read_text())["final_logit_softcapping"]
        return request.param, path
    if request.param in ("mistral", "gemma"):
        return request.param, save_micro_model(request.param, world_tokenizer, tmp_path)
    return request.param, {"llama": micro_llama, "gpt2": micro_gpt2}[request.param]


def _train(path, direct: bool, monkeypatch, hook_on_model: bool = False):
    """``STEPS`` Adam steps on one tuned projection over a repeated, padded batch, through
    ``LowerBlocks.same_batch``; the tuned weight after them and how often the model's own forward
    ran."""
    model, tokenizer = load_model(path, torch.device("cpu"), torch.float32)
    layout = ModelLayout.of(model)
    encoder = PairEncoder(tokenizer)
    batch = encoder.collate([encoder.encode("Fact: Kalo Mirve lives in", "Fengal Vale"),
                             encoder.encode("Fact: Tesk works as", "a baker")])
    tuned = layout.mlp_out_name(1)
    weight = model.get_submodule(tuned).weight
    weight.requires_grad_(True)
    optimizer = torch.optim.Adam([weight], lr=1e-2)
    passes, model_forward = [], model.forward
    model.forward = lambda *a, **k: (passes.append(1), model_forward(*a, **k))[1]
    if hook_on_model:  # as WISE and MEMOIR read the model's own call
        model.register_forward_pre_hook(lambda *_: None)
    if not direct:
        monkeypatch.setattr(upper_blocks.UpperBlocks, "path", lambda self, batch: None)
    lower = LowerBlocks(model, layout, 1, tuned=tuned)
    for _ in range(STEPS):
        logits = lower.same_batch(lambda: model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        ).logits)
        optimizer.zero_grad(set_to_none=True)
        masked_target_nll(logits, batch).backward()
        optimizer.step()
    monkeypatch.undo()
    return weight.detach().clone(), len(passes)


def test_the_direct_path_trains_bitwise_as_the_model_does_without_its_forward(
        family_model, monkeypatch):
    family, path = family_model
    recomputed, recomputed_passes = _train(path, direct=False, monkeypatch=monkeypatch)
    direct, direct_passes = _train(path, direct=True, monkeypatch=monkeypatch)
    assert recomputed_passes == STEPS
    assert torch.equal(direct, recomputed)
    if family == "gemma2":  # its logits are not its head's output: the model's forward stays
        assert direct_passes == STEPS
    else:  # the recording pass only
        assert direct_passes == 1


def test_a_hook_on_the_model_keeps_the_models_forward(micro_llama, monkeypatch):
    recomputed, _ = _train(micro_llama, direct=False, monkeypatch=monkeypatch)
    hooked, passes = _train(micro_llama, direct=True, monkeypatch=monkeypatch,
                            hook_on_model=True)
    assert passes == STEPS
    assert torch.equal(hooked, recomputed)
