"""MALMEN: Massive Editing for LLMs via Meta Learning (Tan et al., ICLR 2024).

Summing MEND's per-token updates makes many simultaneous edits cancel one another. MALMEN
instead asks the network for a *value change* per answer token and finds the one weight update
that realises all of them at once, in the least-squares sense with a ridge term (MALMEN §4.1):

    v_i     = -lr * <k_i, pseudo_key_i> * pseudo_grad_i
    delta W = argmin_D ||K D - V||^2 + e^lambda ||D||^2 = (K^T K + e^lambda I)^-1 K^T V

with K the keys (one row per answer token) and lambda a learned per-module log ridge strength.
The gradient of the training loss reaches V and lambda through the solve (MALMEN §4.2 derives it
by hand to save memory; autograd computes the same quantity here). Trained as MEND is: one batch
per optimiser step on the unedited model, then frozen.
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
from .hypernet.ridge import ridge_factors, ridge_solve  # noqa: F401  (ridge_solve: re-exported)


@dataclass(frozen=True)
class MALMENConfig(HypernetConfig):
    """The MALMEN release's settings (rank 1920, 2 blocks, loc coefficient 1)."""


def malmen_update(keys: torch.Tensor, pseudo_keys: torch.Tensor, pseudo_grads: torch.Tensor,
                  lr: torch.Tensor, log_ridge: torch.Tensor) -> LowRankUpdate:
    """MALMEN's update for one module: pseudo value changes, then the ridge least-squares solve."""
    values = -lr * (keys * pseudo_keys).sum(-1, keepdim=True) * pseudo_grads
    return ridge_factors(keys, values, log_ridge)


@METHODS.register("malmen")
class MALMEN(HypernetMethod):
    name = "malmen"
    description = "hypernetwork editor, least-squares aggregation of many edits (Tan et al. 2024)"
    Config = MALMENConfig
    #: ``release``: the MALMEN release (``editor/malmen.py``, ``config/editor/malmen.yaml``): one
    #: pass, one optimiser step per batch of 512 on the unedited model, then frozen.
    #: ``rledit-release``: the MALMEN baseline of the RLEdit release (``config/editor/malmen.yaml``
    #: there: rank 1024, four blocks, locality 0.6; batches of 20 in sub-batches of 4). ``paper``:
    #: the defaults.
    presets = {
        **model_presets("malmen"),
        "paper": {},
        "release": {
            **RELEASE_PRESET,
            **MALMEN_RELEASE_DATA,
            "rank": 1920,
            "n_blocks": 2,
            "loc_coef": 1.0,
        },
        "rledit-release": {
            **RELEASE_PRESET,
            **RLEDIT_RELEASE_DATA,
            "max_epochs": 1,
            "rank": 1024,
            "n_blocks": 4,
            "loc_coef": 0.6,
        },
    }
    update = staticmethod(malmen_update)
