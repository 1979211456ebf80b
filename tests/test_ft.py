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
    return EditContext(model=model, tokenizer=tokenizer, layout=ModelLayout.of(model), device=torch.device("cpu"),
                       cache_dir=path, task=None, seed=0, generator=torch.Generator().manual_seed(0))


RECORD = EditRecord(uid="0", prompt="Fact: Kalo Mirve lives in", subject="Kalo Mirve", target_new="Fengal Vale")


def test_ft_m_edit_makes_the_target_the_argmax(micro_model_path):
    ctx = _context(micro_model_path)
    probe = HFProbe(ctx.model, ctx.tokenizer, ctx.device)
    pair = ScoringPair(RECORD.prompt, RECORD.target_new)
    assert probe.score([pair])[0].token_accuracy < 1.0
    method = FTM(FTConfig(lr=2e-2, steps=300, norm_constraint=10.0, stop_loss=1e-3), ctx)
    (name,) = method.edited_parameters()
    before = {n: p.clone() for n, p in ctx.model.named_parameters()}
    method.apply([RECORD])
    assert probe.score([pair])[0].token_accuracy == 1.0
    changed = {n for n, p in ctx.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {name}


def test_norm_constraint_bounds_every_weight_change(micro_llama):
    ctx = _context(micro_llama)
    method = FTL(FTConfig(lr=1.0, steps=5, norm_constraint=1e-3), ctx)
    (name,) = method.edited_parameters()
    before = ctx.parameter(name).clone()
    method.apply([RECORD])
    delta = (ctx.parameter(name) - before).abs().max()
    assert 0 < delta <= 1e-3 + 1e-7


def _batch(world_tokenizer):
    encoder = PairEncoder(world_tokenizer)
    return encoder.collate([encoder.encode(RECORD.prompt, RECORD.target_new), encoder.encode("x lives", "in y")])


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
