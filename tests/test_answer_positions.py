"""The output head at the answer positions alone (``methods/answer_positions.py``): the loss and its
gradient are the full computation's, and the methods that use it run the head on fewer rows."""

import pytest
import torch

from editbench.core.models import ModelLayout, load_model
from editbench.core.records import EditRecord
from editbench.core.tokenize import PairEncoder
from editbench.methods import EditContext
from editbench.methods.answer_positions import (
    AnswerPositions,
    at_prompt_last,
    head_at,
    narrowed,
)
from editbench.methods.objectives import (
    last_prompt_position_nll,
    masked_target_nll,
    sub_batch_target_nll,
)

RECORDS = [EditRecord(uid=str(i), prompt=f"Fact: Kalo {i} of the old hills lives in",
                      subject=f"Kalo {i}",
                      target_new=["Fengal Vale", "Orr", "the Tarn of Uld"][i % 3])
           for i in range(5)]


def _context(path):
    model, tokenizer = load_model(path, torch.device("cpu"), torch.float32)
    return EditContext(
        model=model, tokenizer=tokenizer, layout=ModelLayout.of(model), device=torch.device("cpu"),
        cache_dir=path, task=None, seed=0, generator=torch.Generator().manual_seed(0)
    )


def _batch(tokenizer):
    encoder = PairEncoder(tokenizer)
    return encoder.collate([encoder.encode(r.prompt, r.target_new) for r in RECORDS])


def test_the_narrowed_batch_holds_each_rows_target_positions_in_order(world_tokenizer):
    batch = _batch(world_tokenizer)
    answers = narrowed(batch)
    assert answers.index is not None
    counts = batch.target_mask.sum(1)
    assert answers.index.shape == (len(RECORDS), int(counts.max()))
    for row in range(len(RECORDS)):
        n = int(counts[row])
        positions = batch.target_mask[row].nonzero().squeeze(1)
        assert torch.equal(answers.index[row, :n], positions)
        assert torch.equal(answers.batch.labels[row, :n], batch.labels[row, positions])
        assert answers.batch.target_mask[row, :n].all()
        assert not answers.batch.target_mask[row, n:].any()  # the filling is never a target
    # what a loss grouping rows by length reads stays the whole batch's
    assert torch.equal(answers.batch.attention_mask, batch.attention_mask)


@pytest.mark.parametrize("loss, positions_of", [
    (masked_target_nll, narrowed),
    (lambda logits, b: sub_batch_target_nll(logits, b, 2), narrowed),
    (last_prompt_position_nll, at_prompt_last)])
def test_the_loss_and_its_gradient_are_the_full_heads(loss, positions_of, micro_model_path):
    ctx = _context(micro_model_path)
    batch = _batch(ctx.tokenizer)
    answers = positions_of(batch)
    weight = ctx.model.get_parameter(ctx.layout.mlp_out_name(1) + ".weight")
    weight.requires_grad_(True)
    results = []
    for positions in (AnswerPositions(index=None, batch=batch), answers):
        with head_at(ctx.model, positions):
            logits = ctx.model(input_ids=batch.input_ids,
                               attention_mask=batch.attention_mask).logits
        value = loss(logits, positions.batch)
        (grad,) = torch.autograd.grad(value, [weight])
        results.append((logits.shape[1], value.detach(), grad))
    (full_width, full, full_grad), (width, value, grad) = results
    assert width == answers.index.shape[1] < full_width
    assert torch.allclose(value, full, rtol=1e-6, atol=0)
    assert torch.allclose(grad, full_grad, rtol=1e-5, atol=1e-6 * float(full_grad.abs().max()))
    assert grad.abs().sum() > 0


def test_a_batch_of_answers_only_is_left_whole(world_tokenizer):
    batch = _batch(world_tokenizer)
    batch.target_mask[:] = True  # every position predicts a target: nothing to drop
    assert narrowed(batch).index is None


@pytest.mark.parametrize("method, settings", [
    ("ft-m", {"chunk": 1}), ("ft-l", {"chunk": 2}), ("locft-bf", {"chunk": 2}),
    ("locft-bf", {"chunk": 100}), ("ultraedit", {}), ("grace", {}), ("wise", {}), ("memoir", {})])
def test_the_methods_whose_loss_reads_answers_only_run_the_head_there(
        method, settings, micro_model_path):
    from editbench.core.method import METHODS

    ctx = _context(micro_model_path)
    cls = METHODS[method]
    extra = ({"layer": 1, "steps": 3, "stop_loss": 0.0} if method.startswith(("ft-", "locft"))
             else {})
    instance = cls(cls.Config(**{**settings, **extra}), ctx)
    instance.prepare()
    widths = []
    ctx.model.get_output_embeddings().register_forward_hook(
        lambda _m, _args, logits: widths.append(logits.shape[1]))
    batch = _batch(ctx.tokenizer)
    instance.apply(RECORDS)
    assert widths
    # every pass of the edit's steps runs the head as wide as the most answer tokens of its rows
    # (FT-M's one record per step: that record's); the memory methods' one pass per edit that
    # reads their layer's key (GRACE's query, WISE's and MEMOIR's routing) is not a step's
    answers = int(batch.target_mask.sum(1).max() + (method == "locft-bf"))
    steps = [width for width in widths if width <= answers]
    full = len(widths) - len(steps)
    assert len(steps) > full and full <= (len(RECORDS) if method in ("grace", "wise", "memoir")
                                          else 0), widths


def test_left_padded_rows_keep_their_own_answer_positions(micro_model_path):
    """WISE trains on a left-padded batch as its release does: each row's answers sit at another
    offset, and the narrowed loss is still the full head's."""
    ctx = _context(micro_model_path)
    encoder = PairEncoder(ctx.tokenizer)
    batch = encoder.collate([encoder.encode(r.prompt, r.target_new) for r in RECORDS], left=True)
    answers = narrowed(batch)
    for row in range(len(RECORDS)):
        positions = batch.target_mask[row].nonzero().squeeze(1)
        assert torch.equal(answers.index[row, :len(positions)], positions)
    losses = []
    for positions in (AnswerPositions(index=None, batch=batch), answers):
        with head_at(ctx.model, positions), torch.no_grad():
            logits = ctx.model(input_ids=batch.input_ids,
                               attention_mask=batch.attention_mask).logits
        losses.append(masked_target_nll(logits, positions.batch))
    assert torch.allclose(losses[0], losses[1], rtol=1e-6, atol=0)


def test_a_head_called_on_another_shape_is_refused(micro_model_path):
    """A model that calls its head on something other than the batch's (rows, positions, width)
    hidden states gets a clear error, not logits of the wrong rows."""
    ctx = _context(micro_model_path)
    answers = narrowed(_batch(ctx.tokenizer))
    head = ctx.model.get_output_embeddings()
    with head_at(ctx.model, answers), pytest.raises(ValueError, match="output head"):
        head(torch.zeros(2, 3, head.in_features))
    head(torch.zeros(2, 3, head.in_features))  # the hook is gone once outside


def test_logits_made_without_the_head_module_are_refused(world_tokenizer):
    """A model that computes its logits without calling its output head module never meets the
    narrowing hook and returns every position: a loss would read them against the narrowed labels,
    so ``read`` refuses them."""
    batch = _batch(world_tokenizer)
    answers = narrowed(batch)
    full = torch.zeros(*batch.input_ids.shape, 7)
    with pytest.raises(ValueError, match="output head"):
        answers.read(full)
    narrow = torch.zeros(len(RECORDS), answers.index.shape[1], 7)
    assert answers.read(narrow) is narrow
