"""The ridge least-squares solve that MALMEN and UltraEdit share.

Both turn one value change per row into one weight update: the D that minimises
``||K D - V||^2 + ridge ||D||^2``, i.e. the solution of the normal equations
``(K^T K + ridge I) D = K^T V`` (MALMEN §4.1; UltraEdit ``editor/ultraedit.py:92-94``).
"""

from __future__ import annotations

import torch

from .modules import LowRankUpdate


def ridge_factors(
    keys: torch.Tensor, values: torch.Tensor, log_ridge: torch.Tensor
) -> LowRankUpdate:
    """(K^T K + e^lambda I)^-1 K^T V, through the smaller of the two equivalent systems: with n rows
    and d key dimensions, K^T (K K^T + e^lambda I)^-1 V when n < d (push-through identity), kept as
    its factors K and (K K^T + e^lambda I)^-1 V; otherwise the dense d x d solve."""
    n, d = keys.shape
    ridge = log_ridge.exp()
    if n < d:
        gram = keys @ keys.T + ridge * torch.eye(n, dtype=keys.dtype, device=keys.device)
        return LowRankUpdate(keys, torch.linalg.solve(gram, values))
    gram = keys.T @ keys + ridge * torch.eye(d, dtype=keys.dtype, device=keys.device)
    return LowRankUpdate(None, torch.linalg.solve(gram, keys.T @ values))


def ridge_solve(keys: torch.Tensor, values: torch.Tensor, log_ridge: torch.Tensor) -> torch.Tensor:
    """The ridge solution as one dense (d, value_size) matrix."""
    return ridge_factors(keys, values, log_ridge).dense()
