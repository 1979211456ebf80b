"""MEMIT: mass-editing memory in a transformer (Meng et al., ICLR 2023).

Each edited layer's output projection ``W`` gets the least-squares change that writes the batch's
keys ``K`` to the residual ``R`` while keeping ``W k`` for generic text keys, weighted by
``mom2_update_weight`` (MEMIT's lambda):

    Delta = R K^T (lambda * E[k k^T] + K K^T)^(-1)

(MEMIT Alg. 1, the update with ``C0 = lambda * E[k k^T]``). The rest, target values, keys and the
spread of the residual over layers, is the shared core in :mod:`.locate`. MEMIT keeps no state
between batches: each batch is protected only through ``C0``, never against earlier edits, which
is why its early edits fade in long sequences.

Defaults suit the pocket-world model; ``memit@gpt2-xl``, ``memit@gpt-j-6b`` and ``memit@llama-3-8b``
are the published settings. ``lambda`` must grow with the key width (the published 15,000-20,000 is
for 4,096-16,384-wide keys); the pocket default was chosen on the pocket world
(docs/locate-then-edit.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.method import METHODS
from .locate.config import LocateConfig, published_presets
from .locate.editor import LocateThenEdit


@dataclass(frozen=True)
class MEMITConfig(LocateConfig):
    mom2_update_weight: float = 100.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mom2_update_weight <= 0:
            raise ValueError(f"mom2_update_weight must be positive, got {self.mom2_update_weight}")


@METHODS.register("memit")
class MEMIT(LocateThenEdit):
    name = "memit"
    description = (
        "MEMIT: least-squares multi-layer MLP edit weighted by key second moments "
        "(Meng et al. 2023)"
    )
    Config = MEMITConfig
    config: MEMITConfig
    presets = published_presets(
        **{"gpt2-xl": {"mom2_update_weight": 20000}, "gpt-j-6b": {"mom2_update_weight": 15000},
           "llama-3-8b": {"mom2_update_weight": 15000}})

    def layer_delta(self, index: int, keys: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        mom2 = self.stats[self.layers[index]].mom2.to(keys.device)
        gram = self.config.mom2_update_weight * mom2 + keys @ keys.T
        return residual @ torch.linalg.solve(gram, keys).T
