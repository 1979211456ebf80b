"""The editor network shared by MEND, MALMEN and RLEdit.

It maps each answer token's (key, output gradient) pair to a pseudo-key and a pseudo-gradient:
a running mean/std normaliser, then residual low-rank blocks whose per-module scale and shift let
one network serve every edited module of the same shape (MEND §3.2; MALMEN's and RLEdit's
released ``nets.py``). It also holds, per module, the learned edit learning rate and the learned
log ridge strength lambda of MALMEN's least-squares problem (MALMEN §4, ``(K^T K + e^lambda I)``).
"""

from __future__ import annotations

import torch
from torch import nn


class RunningNormaliser(nn.Module):
    """Mean and standard deviation of every row seen so far, merged batch by batch.

    Uses the exact pairwise merge of Chan et al. (1979): the sum of squared deviations of the union
    is ``m2_a + m2_b + delta^2 n_a n_b / n``. (The released MALMEN/RLEdit normaliser adds
    ``n_b * var_b`` with the unbiased ``var_b``, which over-counts each batch slightly, and gives NaN
    for a one-row batch.) Statistics are kept in float64 buffers, so they are saved with the
    network and survive a resume.
    """

    def __init__(self, size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(size, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(size, dtype=torch.float64))

    @torch.no_grad()
    def update(self, rows: torch.Tensor) -> None:
        if rows.shape[0] == 0:
            return
        rows = rows.to(torch.float64)
        n_b = rows.shape[0]
        mean_b = rows.mean(0)
        m2_b = ((rows - mean_b) ** 2).sum(0)
        n_a = self.count.clone()
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean += delta * (n_b / n)
        self.m2 += m2_b + delta.pow(2) * (n_a * n_b / n)
        self.count.copy_(n)

    @property
    def std(self) -> torch.Tensor:
        """Sample standard deviation (``n - 1`` in the denominator), as ``torch.std``."""
        return (self.m2 / (self.count - 1).clamp_min(1)).sqrt()

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(rows.dtype)
        std = self.std.to(rows.dtype)
        return (rows - mean) / (std + self.eps)


class LowRankBlock(nn.Module):
    """``y + scale_m * relu(y A B + b) + shift_m``: a residual block of rank ``rank``, with a scale and
    shift per edited module ``m``. ``B`` starts at zero, so an untrained block is the identity and
    an untrained editor edits with the normalised gradient itself.

    The released MALMEN/RLEdit networks also start ``b`` (and the shift) at zero. Then the ReLU's
    input is exactly 0, where its derivative is 0, so A, B, b and the scale never receive a gradient
    and training moves only the shifts (and the learned lr and ridge). ``bias_init > 0`` starts the
    units active, with the shift at ``-bias_init`` so that the block is still the identity;
    ``bias_init=0`` is the released initialisation.
    """

    def __init__(self, size: int, rank: int, n_modules: int, generator: torch.Generator | None = None,
                 bias_init: float = 0.0) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.randn(size, rank, generator=generator))
        self.B = nn.Parameter(torch.zeros(rank, size))
        self.bias = nn.Parameter(torch.full((size,), float(bias_init)))
        self.scale = nn.Parameter(torch.ones(n_modules, size))
        self.shift = nn.Parameter(torch.full((n_modules, size), -float(bias_init)))

    def forward(self, y: torch.Tensor, module: int) -> torch.Tensor:
        x = torch.relu(y @ self.A @ self.B + self.bias)
        return y + self.scale[module] * x + self.shift[module]


def effective_rank(rank: int, size: int) -> int:
    """The configured rank, capped at a quarter of the block width ``key_size + value_size``.

    The published ranks (1920 for GPT-J and GPT-2 XL, 1024 for 7-9B models) are below a quarter of
    those models' widths, so the cap leaves them alone; on a small model it stops the network from
    being as large as the model it edits (the pocket model: width 512, rank 128)."""
    return max(1, min(rank, size // 4))


class EditorNet(nn.Module):
    """One editor for all edited modules of one (key_size, value_size) shape."""

    def __init__(self, key_size: int, value_size: int, rank: int, n_blocks: int, n_modules: int,
                 edit_lr: float, generator: torch.Generator | None = None, bias_init: float = 0.0) -> None:
        super().__init__()
        self.key_size, self.value_size = key_size, value_size
        size = key_size + value_size
        self.normaliser = RunningNormaliser(size)
        self.blocks = nn.ModuleList(LowRankBlock(size, effective_rank(rank, size), n_modules, generator, bias_init)
                                    for _ in range(n_blocks))
        self.lr = nn.Parameter(torch.full((n_modules,), float(edit_lr)))
        self.log_ridge = nn.Parameter(torch.zeros(n_modules))

    def forward(self, keys: torch.Tensor, grads: torch.Tensor, module: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pseudo-keys and pseudo-gradients for the rows of one module."""
        hidden = self.normaliser(torch.cat((keys, grads), -1))
        for block in self.blocks:
            hidden = block(hidden, module)
        pseudo_keys, pseudo_grads = hidden.split([self.key_size, self.value_size], -1)
        return pseudo_keys, pseudo_grads
