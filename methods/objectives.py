"""Losses on target tokens, shared by every method that optimises towards an edit target."""

from __future__ import annotations

import torch

from ..core.tokenize import PairBatch


def masked_target_nll_per_record(logits: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """Each example's mean NLL over its target tokens; prompt and padding positions are masked out."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    token_nll = -logprobs.gather(2, batch.labels.unsqueeze(2)).squeeze(2)
    mask = batch.target_mask.to(token_nll.dtype)
    return (token_nll * mask).sum(1) / mask.sum(1).clamp_min(1)


def masked_target_nll(logits: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """Teacher-forced NLL of the target tokens only; prompt and padding positions are masked out.

    Returns the mean over examples of each example's mean token NLL, so long targets do not
    outweigh short ones. This is FT-M's objective (EasyEdit) and the answer-token loss of
    MEND-style editors.
    """
    return masked_target_nll_per_record(logits, batch).mean()


def summed_target_nll(logits: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """The sum over examples of each example's mean target NLL. Its gradient at one example's tokens
    does not depend on how many examples share the batch (a mean over the batch would scale it by
    1/B), which is what makes the hypernetworks' per-token gradients batch-size invariant."""
    return masked_target_nll_per_record(logits, batch).sum()


def last_prompt_position_nll(logits: torch.Tensor, batch: PairBatch) -> torch.Tensor:
    """ROME's FT-L objective: every target token is scored by the distribution at the prompt's last
    position (Meng et al. 2022, the ``ft`` baseline), so only the first-token distribution is trained."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    logprobs = torch.log_softmax(logits[rows, batch.prompt_last].float(), dim=-1)
    labels = batch.labels.masked_fill(~batch.target_mask, 0)
    picked = logprobs.gather(1, labels)
    mask = batch.target_mask.to(picked.dtype)
    return (-(picked * mask).sum(1) / mask.sum(1).clamp_min(1)).mean()
