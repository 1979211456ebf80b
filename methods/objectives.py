"""Losses on target tokens, shared by every method that optimises towards an edit target."""

from __future__ import annotations

import torch

from ..core.tokenize import PairBatch


def target_token_nll(logits: torch.Tensor, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position NLL of the target tokens, (rows, width), and the float mask of target
    positions."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    token_nll = -logprobs.gather(2, batch.labels.unsqueeze(2)).squeeze(2)
    return token_nll, batch.target_mask.to(token_nll.dtype)


def masked_target_nll_per_record(logits: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """Each example's mean NLL over its target tokens; prompt and padding positions are masked
    out."""
    token_nll, mask = target_token_nll(logits, batch)
    return (token_nll * mask).sum(1) / mask.sum(1).clamp_min(1)


def masked_target_nll(logits: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """Teacher-forced NLL of the target tokens only; prompt and padding positions are masked out.

    Returns the mean over examples of each example's mean token NLL, so long targets do not
    outweigh short ones. This is FT-M's objective (EasyEdit) and the answer-token loss of
    MEND-style editors.
    """
    return masked_target_nll_per_record(logits, batch).mean()


def token_mean_target_nll(logits: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """The mean NLL over every target token of the batch (``F.cross_entropy`` over the answer
    tokens, as the releases compute a sub-batch's loss): long targets weigh more."""
    token_nll, mask = target_token_nll(logits, batch)
    return (token_nll * mask).sum() / mask.sum().clamp_min(1)


def summed_target_nll(logits: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """The sum over examples of each example's mean target NLL. Its gradient at one example's tokens
    does not depend on how many examples share the batch (a mean over the batch would scale it by
    1/B), which is what makes the hypernetworks' per-token gradients batch-size invariant."""
    return masked_target_nll_per_record(logits, batch).sum()


def last_prompt_position_nll(logits: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """ROME's FT-L objective: every target token is scored by the distribution at the prompt's last
    position (Meng et al. 2022, the ``ft`` baseline), so only the first-token distribution is
    trained."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    logprobs = torch.log_softmax(logits[rows, batch.prompt_last].float(), dim=-1)
    labels = batch.labels.masked_fill(~batch.target_mask, 0)
    picked = logprobs.gather(1, labels)
    mask = batch.target_mask.to(picked.dtype)
    return (-(picked * mask).sum(1) / mask.sum(1).clamp_min(1)).mean()


def sub_batch_token_means(
    values: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor, size: int
) -> torch.Tensor:
    """The releases' reduction of a per-position loss (MALMEN ``data/base.py:32-52`` with
    ``util.py:28-76``): rows sorted by decreasing sequence length, cut into sub-batches of ``size``,
    each reduced to its mean over the masked positions (``F.cross_entropy``'s token mean,
    ``kl_div``'s ``batchmean`` over answer positions), and the sub-batches' means summed."""
    order = torch.argsort(-lengths, stable=True)
    total = values.new_zeros(())
    for chunk in order.split(size):
        total = total + (values[chunk] * mask[chunk]).sum() / mask[chunk].sum().clamp_min(1)
    return total


def sub_batch_target_nll(logits: torch.Tensor, batch: PairBatch, size: int) -> torch.Tensor:
    """Teacher-forced target NLL reduced as the releases reduce it
    (:func:`sub_batch_token_means`)."""
    token_nll, mask = target_token_nll(logits, batch)
    return sub_batch_token_means(token_nll, mask, batch.attention_mask.sum(1), size)
