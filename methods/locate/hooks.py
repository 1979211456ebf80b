"""Reading keys and writing values inside the model, with forward hooks.

A *key* is the input of an MLP's output projection (``down_proj``/``c_proj``/``fc_out``); a
*value* is what a transformer block adds to the residual stream, read at the block's output.
Every read goes through one forward pass per chunk of rows, so several layers can be read at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .prompts import LocatedBatch


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output, hidden: torch.Tensor):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


@contextmanager
def edit_block_output(model: nn.Module, block: str,
                      edit: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """While active, the output hidden states of ``block`` are replaced by ``edit(hidden)``."""
    handle = model.get_submodule(block).register_forward_hook(
        lambda _m, _args, output: _replace_hidden(output, edit(_hidden(output))))
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def read_at(
    model: nn.Module,
    located: LocatedBatch,
    key_modules: Sequence[str] = (),
    block: str | None = None,
    chunk: int = 64,
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """For every row, float32 inputs of each of ``key_modules`` and the output of ``block``, taken
    at the row's lookup position: ``([keys (rows, d_in)] per module, values (rows, d_model))``."""
    keys: list[list[torch.Tensor]] = [[] for _ in key_modules]
    values: list[torch.Tensor] = []
    rows = located.rows
    for start in range(0, rows.input_ids.shape[0], chunk):
        part = slice(start, start + chunk)
        where = (
            torch.arange(rows.input_ids[part].shape[0], device=rows.input_ids.device),
            located.lookup[part],
        )
        handles = [
            model.get_submodule(name).register_forward_hook(
                lambda _m, args, _out, i=i, where=where: keys[i].append(args[0][where].float()))
            for i, name in enumerate(key_modules)
        ]
        if block is not None:
            handles.append(
                model.get_submodule(block).register_forward_hook(
                    lambda _m, _args, output, where=where: values.append(
                        _hidden(output)[where].float()
                    )
                )
            )
        try:
            model(input_ids=rows.input_ids[part], attention_mask=rows.attention_mask[part],
                  use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
    return [torch.cat(k) for k in keys], (torch.cat(values) if block is not None else None)


def mean_keys(keys: torch.Tensor, located: LocatedBatch, n_records: int) -> torch.Tensor:
    """One key per record, ``(d_in, n_records)``: the bare prompt's key and the mean over prefixed
    prompts' keys, averaged (the published code weighs the two kinds of context equally)."""
    out = torch.zeros(n_records, keys.shape[1], device=keys.device)
    kinds = [g for g in (0, 1) if bool((located.group == g).any())]
    for g in kinds:
        rows = located.group == g
        sums = torch.zeros_like(out).index_add_(0, located.owner[rows], keys[rows])
        counts = torch.bincount(located.owner[rows], minlength=n_records).clamp_min(1)
        out += sums / counts.unsqueeze(1)
    return (out / len(kinds)).T
