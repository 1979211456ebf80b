"""Float32 master copies of edited tensors, for models held in bf16 or fp16.

A lifelong run adds thousands of small updates to the same weights. In bf16 (8 bits of mantissa) an
update smaller than about 1/256 of a weight's magnitude rounds away entirely, and the ones that
survive are rounded each time, so a long stream of batches drifts from what the method computed.
Mixed-precision training keeps a float32 copy of each trained tensor for the same reason.
:class:`MasterWeights` does that for editing: the first time a method writes a tensor, its float32
copy is taken (exactly the loaded weight, which bf16 converts to float32 without loss); every later
update is added to the copy, and the copy, rounded once, is written into the model. The copies are
lifelong state: the runner keeps them in each snapshot, so a resumed run continues from the same
float32 values as one that was never stopped.

Memory: 4 bytes per edited parameter (about 1.4 GB for AlphaEdit's five Llama-3-8B ``down_proj``
matrices), which ``editbench plan`` counts. For float32 and float64 models nothing is copied.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

#: dtypes whose rounding loses small updates; a model in another dtype is written to directly
LOW_PRECISION = (torch.bfloat16, torch.float16)
#: how master copies are named inside a snapshot's method state
STATE_PREFIX = "master-copy/"


class MasterWeights:
    """The float32 copies of the tensors a method has written, by parameter name."""

    def __init__(self, model: nn.Module, enabled: bool = True) -> None:
        self.model = model
        self.enabled = enabled
        self.copies: dict[str, torch.Tensor] = {}

    def keeps(self, name: str) -> bool:
        """Whether writes to ``name`` go through a float32 copy (a low-precision tensor, copies
        on)."""
        return self.enabled and self.model.get_parameter(name).dtype in LOW_PRECISION

    def master(self, name: str) -> torch.Tensor:
        """The exact value of ``name``: its float32 copy (taken now if this is the first write)."""
        param = self.model.get_parameter(name)
        if not self.keeps(name):
            return param
        if name not in self.copies:
            self.copies[name] = param.detach().float().clone()
        return self.copies[name]

    @torch.no_grad()
    def add(self, name: str, delta: torch.Tensor) -> None:
        """Add ``delta`` (in the parameter's own storage layout, any float dtype) to ``name``."""
        param = self.model.get_parameter(name)
        if not self.keeps(name):
            # a sharded model keeps it on its own device
            param.add_(delta.to(param.device, param.dtype))
            return
        master = self.master(name)
        master.add_(delta.to(master.device, torch.float32))
        param.copy_(master)

    @torch.no_grad()
    def assign(self, name: str, value: torch.Tensor) -> None:
        """Set ``name`` to ``value`` (float32 or better), keeping the unrounded value as its
        copy."""
        param = self.model.get_parameter(name)
        if self.keeps(name):
            self.copies[name] = value.detach().to(param.device, torch.float32).clone()
        param.copy_(value)

    def sync_names(self, names: Iterable[str]) -> None:
        """Write each copy in ``names`` into the model again (after something overwrote the
        model)."""
        with torch.no_grad():
            for name in names:
                if name in self.copies:
                    self.model.get_parameter(name).copy_(self.copies[name])

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.copies.values())

    # -- snapshots --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {STATE_PREFIX + name: t for name, t in self.copies.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Take back the copies from a snapshot's state (the model's rounded tensors are loaded by
        then)."""
        self.copies = {}
        for key, tensor in state.items():
            name = key.removeprefix(STATE_PREFIX)
            self.copies[name] = tensor.to(self.model.get_parameter(name).device, torch.float32,
                                          copy=True)
        self.sync_names(list(self.copies))


def split_state(
    state: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A snapshot's state as (the method's own, the master copies)."""
    method = {k: v for k, v in state.items() if not k.startswith(STATE_PREFIX)}
    masters = {k: v for k, v in state.items() if k.startswith(STATE_PREFIX)}
    return method, masters
