"""The target value of each edit: what the last edited layer should output at the subject.

MEMIT (Meng et al., ICLR 2023, Alg. 1, the z_i step; ROME's v*) finds, for each edit, a vector
``z = h + delta`` for the output ``h`` of the last edited block at the subject's last token, such
that with ``delta`` added there the model predicts the new target. ``delta`` minimises

    mean_prompts NLL(target)  +  kl_factor * KL(p_delta || p_0) on "{subject} is a"
                              +  v_weight_decay * ||delta|| / ||h||^2

with Adam, and is clamped to ``||delta|| <= clamp_norm_factor * ||h||`` after each step. Records of
a batch are optimised together, each with its own delta, its own stop test and its own clamp: a
record's loss depends only on its own rows, so this equals optimising them one by one, just faster.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...core.models import ModelLayout
from ...core.records import EditRecord
from ...core.tokenize import PairEncoder
from ..answer_positions import narrowed
from ..lower_blocks import LowerBlocks
from .config import LocateConfig
from .hooks import edit_block_output
from .prompts import LocatedBatch, locate


def optimise_values(
    model: nn.Module,
    encoder: PairEncoder,
    block: str,
    records: Sequence[EditRecord],
    prefixes: Sequence[str],
    config: LocateConfig,
    device: torch.device,
    layout: ModelLayout | None = None,
) -> torch.Tensor:
    """Float32 target outputs of ``block``, one per record: ``(n_records, d_model)``. With the
    model's ``layout``, the blocks up to ``block`` run at a chunk's first step only and are
    replayed at the others (its rows never change and neither do those blocks' weights; the
    delta is added to the replayed output as to the computed one: the same numbers)."""
    chunks = [records[i : i + config.v_chunk] for i in range(0, len(records), config.v_chunk)]
    through = layout.layer_of(block) + 1 if layout is not None else None
    with torch.enable_grad():
        return torch.cat([
            _optimise(
                model,
                block,
                locate(encoder, chunk, prefixes, with_target=True, kl_prompt=True).to(device),
                len(chunk),
                config,
                LowerBlocks(model, layout, through) if through else None,
            )
            for chunk in chunks
        ])


def _per_record(values: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    sums = torch.zeros(n, device=values.device).index_add(0, owner, values)
    return sums / torch.bincount(owner, minlength=n).clamp_min(1)


def _optimise(
    model: nn.Module, block: str, located: LocatedBatch, n: int, config: LocateConfig,
    lower: LowerBlocks | None = None,
) -> torch.Tensor:
    rows = torch.arange(located.lookup.numel(), device=located.lookup.device)
    # one of each per record, in record order
    bare, kl_rows = located.group == 0, located.group == 2
    batch = located.rows
    # the head runs where the loss reads (``answer_positions.py``): the rewrite rows' target
    # positions and the KL rows' subject position
    reading = batch.target_mask.bool().clone()
    reading[rows[kl_rows], located.lookup[kl_rows]] = True
    answers = narrowed(batch, reading)
    kl_columns = answers.column(located.lookup)[kl_rows]
    batch = answers.batch
    token_rows = batch.target_mask.nonzero(as_tuple=True)[0]
    width = model.get_input_embeddings().embedding_dim
    delta = torch.zeros(n, width, device=rows.device, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=config.v_lr)
    h0: torch.Tensor | None = None
    kl_init: torch.Tensor | None = None
    active = torch.ones(n, dtype=torch.bool, device=rows.device)

    def add_delta(hidden: torch.Tensor) -> torch.Tensor:
        nonlocal h0
        if h0 is None:
            h0 = hidden[rows[bare], located.lookup[bare]].detach().float()
        hidden = hidden.clone()
        hidden[rows, located.lookup] = (
            hidden[rows, located.lookup] + delta[located.owner].to(hidden.dtype)
        )
        return hidden

    for step in range(config.v_steps):
        def forward() -> torch.Tensor:
            return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         use_cache=False).logits

        with edit_block_output(model, block, add_delta):
            logits = answers.logits(
                model, lambda: lower.same_batch(forward) if lower is not None else forward())
        target_logp = F.log_softmax(logits[batch.target_mask].float(), dim=-1)
        token_nll = -target_logp.gather(1, batch.labels[batch.target_mask].unsqueeze(1)).squeeze(1)
        row_nll = torch.zeros(rows.numel(), device=rows.device).index_add(0, token_rows, token_nll)
        row_nll = row_nll / batch.target_mask.sum(1).clamp_min(1)
        rewrite = ~kl_rows
        nll = _per_record(row_nll[rewrite], located.owner[rewrite], n)
        kl_logp = F.log_softmax(logits[rows[kl_rows], kl_columns].float(), dim=-1)
        if kl_init is None:
            kl_init = kl_logp.detach()
        kl = config.kl_factor * (kl_logp.exp() * (kl_logp - kl_init)).sum(-1)
        assert h0 is not None
        decay = config.v_weight_decay * delta.norm(dim=1) / h0.norm(dim=1).pow(2)
        loss = nll + kl + decay
        active &= loss.detach() >= config.v_stop_loss
        if not bool(active.any()) or step == config.v_steps - 1:
            break
        optimizer.zero_grad(set_to_none=True)
        loss[active].sum().backward()
        frozen = delta.detach().clone()
        optimizer.step()
        with torch.no_grad():
            delta[~active] = frozen[~active]  # Adam's momentum must not move a finished record
            limit = config.clamp_norm_factor * h0.norm(dim=1)
            delta.mul_((limit / delta.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0).unsqueeze(1))
    assert h0 is not None
    return h0 + delta.detach()
