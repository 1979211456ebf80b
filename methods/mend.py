"""MEND: Model Editor Networks with gradient decomposition (Mitchell et al., ICLR 2022).

A linear layer's fine-tuning gradient for a batch is a sum of rank-1 outer products, one per
token, of the layer's input (key) and the loss gradient at its output (MEND §3.1, eq. 2). MEND
trains a small network to rewrite each factor into a pseudo-key and a pseudo-gradient and edits
with the sum of *their* outer products times a learned per-module step (§3.2, eq. 3-4):

    delta W = -lr * sum_i  pseudo_key_i (x) pseudo_grad_i

so a batch whose edits have n answer tokens changes each module by a matrix of rank at most n.
The network, hooks and training are the shared core (``methods/hypernet``); as in the MEND and
MALMEN releases it is trained one batch at a time on the unedited model and then frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.method import METHODS
from .hypernet import (
    MALMEN_RELEASE_DATA,
    RELEASE_PRESET,
    RLEDIT_RELEASE_DATA,
    HypernetConfig,
    HypernetMethod,
    model_presets,
)
from .hypernet.modules import LowRankUpdate

#: MEND's network in the MALMEN and RLEdit releases (``config/editor/mend.yaml:2-6``)
RELEASED_NET = {"rank": 1920, "n_blocks": 2, "loc_coef": 1.0}


@dataclass(frozen=True)
class MENDConfig(HypernetConfig):
    """MALMEN's MEND baseline settings (rank 1920, 2 blocks, loc coefficient 1), trained one batch
    per optimiser step on the unedited model."""


def mend_update(keys: torch.Tensor, pseudo_keys: torch.Tensor, pseudo_grads: torch.Tensor,
                lr: torch.Tensor, log_ridge: torch.Tensor) -> LowRankUpdate:
    """Sum over rows of the outer products pseudo_key_i pseudo_grad_i^T, scaled by -lr (MEND eq. 4),
    kept as its two factors. ``keys`` and ``log_ridge`` are unused: MEND neither weighs rows by
    their keys nor solves."""
    return LowRankUpdate(pseudo_keys, -lr * pseudo_grads)


@METHODS.register("mend")
class MEND(HypernetMethod):
    name = "mend"
    description = (
        "hypernetwork editor, sum of rank-1 pseudo-gradient updates (Mitchell et al. 2022)"
    )
    Config = MENDConfig
    #: ``release``: the MEND of the MALMEN release (``editor/mend.py``,
    #: ``config/editor/mend.yaml``): one pass, one optimiser step per batch of 512 on the unedited
    #: model, keys at every token, then frozen. ``rledit-release``: the MEND baseline of the RLEdit
    #: release (batches of 20 in sub-batches of 4). MEND's own code (eric-mitchell/mend) differs:
    #: docs/hypernetworks.md. ``paper``: the defaults.
    presets = {
        **model_presets("mend"),
        "paper": {},
        "release": {**RELEASE_PRESET, **MALMEN_RELEASE_DATA, **RELEASED_NET, "tokens": "all"},
        "rledit-release": {
            **RELEASE_PRESET,
            **RLEDIT_RELEASE_DATA,
            **RELEASED_NET,
            "max_epochs": 1,
            "tokens": "all",
        },
    }
    update = staticmethod(mend_update)
