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

    ``exact`` (the default) uses the exact pairwise merge of Chan et al. (1979): the sum of squared
    deviations of the union is ``m2_a + m2_b + delta^2 n_a n_b / n``. ``release`` reproduces the
    MALMEN and RLEdit normaliser (MALMEN ``nets.py:17-24``, RLEdit ``nets.py:16-23``): it adds
    ``n_b * var_b`` with the unbiased batch variance (over-counting each batch by
    ``n_b / (n_b - 1)``; a one-row batch makes the statistics NaN for good, as there) and divides by
    ``std + eps`` with float32's machine epsilon. Statistics are float64 buffers, saved with the
    network.
    """

    MODES = ("exact", "release")

    def __init__(self, size: int, mode: str = "exact") -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"normaliser must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.mode = mode
        self.eps = torch.finfo(torch.float32).eps if mode == "release" else 1e-6
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
        if self.mode == "release":
            m2_b = n_b * rows.var(0) if n_b > 1 else torch.full_like(mean_b, float("nan"))
        else:
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
    """``y + scale_m * clamp(y A B + b, min=0) + shift_m``: a residual block of rank ``rank``, with
    a scale and shift per edited module ``m`` (MALMEN ``nets.py:52-55``, RLEdit ``nets.py:53-57``).
    ``B``, ``b`` and the shift start at zero and the scale at one, as released, so an untrained
    block is the identity and an untrained editor edits with the normalised gradient itself.

    The activation is ``clamp(min=0)``, as in all three releases, not ``relu``: at exactly 0 its
    derivative is 1 where relu's is 0 (MEND's ``nn.py:80`` says so), so with ``B = 0`` and ``b = 0``
    the blocks learn from the first step. (MEND's own ``LRLinear`` applies scale and shift before
    the clamp; MALMEN's and RLEdit's MEND, which editbench follows, use this block.)
    """

    def __init__(
        self, size: int, rank: int, n_modules: int, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.randn(size, rank, generator=generator))
        self.B = nn.Parameter(torch.zeros(rank, size))
        self.bias = nn.Parameter(torch.zeros(size))
        self.scale = nn.Parameter(torch.ones(n_modules, size))
        self.shift = nn.Parameter(torch.zeros(n_modules, size))

    def forward(self, y: torch.Tensor, module: int) -> torch.Tensor:
        x = (y @ self.A @ self.B + self.bias).clamp(min=0)
        return y + self.scale[module] * x + self.shift[module]


def effective_rank(rank: int, size: int, cap: bool = True) -> int:
    """The configured rank, capped (``cap``) at a quarter of the block width
    ``key_size + value_size``.

    The cap is editbench's (no release has it; MEND's ``nn.py:41`` caps at the width). The published
    ranks (1920 for GPT-J and GPT-2 XL, 1024 for 7-9B models) are below a quarter of those models'
    widths, so it leaves them alone; on a small model it stops the network from being larger than
    the model it edits (the pocket model: width 512, rank 128). The release presets turn it off."""
    return max(1, min(rank, size // 4)) if cap else rank


class EditorNet(nn.Module):
    """One editor for all edited modules of one (key_size, value_size) shape."""

    def __init__(self, key_size: int, value_size: int, rank: int, n_blocks: int, n_modules: int,
                 edit_lr: float, generator: torch.Generator | None = None, cap_rank: bool = True,
                 normaliser: str = "exact") -> None:
        super().__init__()
        self.key_size, self.value_size = key_size, value_size
        size = key_size + value_size
        self.normaliser = RunningNormaliser(size, normaliser)
        self.blocks = nn.ModuleList(
            LowRankBlock(size, effective_rank(rank, size, cap_rank), n_modules, generator)
            for _ in range(n_blocks)
        )
        self.lr = nn.Parameter(torch.full((n_modules,), float(edit_lr)))
        self.log_ridge = nn.Parameter(torch.zeros(n_modules))

    def forward(
        self, keys: torch.Tensor, grads: torch.Tensor, module: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pseudo-keys and pseudo-gradients for the rows of one module."""
        hidden = self.normaliser(torch.cat((keys, grads), -1))
        for block in self.blocks:
            hidden = block(hidden, module)
        pseudo_keys, pseudo_grads = hidden.split([self.key_size, self.value_size], -1)
        return pseudo_keys, pseudo_grads
