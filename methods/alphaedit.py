"""AlphaEdit: null-space constrained knowledge editing (Fang et al., ICLR 2025).

MEMIT trades the new edits off against preserved knowledge ``K0`` through ``lambda * E[k k^T]``;
AlphaEdit removes that trade-off. It projects every weight change onto the null space of the
preserved keys, ``Delta P`` with ``P K0 ~ 0``, so the edited layer's output on those keys does not
change, and solves for the edit with the projection inside the least-squares problem
(``||Delta P K - R||^2 + ||Delta P K_p||^2 + l2 ||Delta P||^2``, the paper's sequential form):

    Delta P = R K^T P ((K K^T + K_p K_p^T) P + l2 * I)^(-1)      (the release solves its transpose)

``P = U_0 U_0^T`` where ``U_0`` are the eigenvectors of ``E[k k^T]`` (its SVD, as the matrix is
symmetric) whose eigenvalues fall below ``nullspace_threshold``. ``K_p K_p^T`` accumulates the keys
of every earlier batch, so later edits keep the outputs of earlier ones; it is lifelong state and
part of :meth:`state_dict`. ``l2`` keeps the solve well posed and the update small.

The target values, keys and residual spread are MEMIT's, shared in :mod:`.locate`. The published
settings are presets (``alphaedit@gpt2-xl``, ``@gpt-j-6b``, ``@llama-3-8b``: threshold 2e-2, l2 10);
the release's hparams files also list MEMIT's ``mom2_update_weight``, which its update never reads,
so it is not a setting here. The threshold is absolute, so it depends on the scale of a model's
keys; the pocket defaults (0.5, 3) were chosen on that model, whose keys at 2e-2 / 10 leave every
edit unwritten (docs/locate-then-edit.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.costs import ModelShape
from ..core.method import METHODS
from .locate.config import LocateConfig, published_presets
from .locate.editor import LocateThenEdit
from .locate.prompts import LocatedBatch
from .locate.published import read_null_space_projection
from .locate.stats import KeyStats

log = logging.getLogger(__name__)


def null_space_projection(mom2: torch.Tensor, threshold: float) -> torch.Tensor:
    """The orthogonal projection onto the span of eigenvectors of ``mom2`` with eigenvalue below
    ``threshold``: symmetric and idempotent, and ``P k ~ 0`` for keys that ``mom2`` summarises."""
    eigenvalues, eigenvectors = torch.linalg.eigh(mom2.float())
    basis = eigenvectors[:, eigenvalues < threshold]
    return basis @ basis.T


@dataclass(frozen=True)
class AlphaEditConfig(LocateConfig):
    nullspace_threshold: float = 0.5  # published 2e-2; see the module docstring
    l2: float = 3.0  # the release's "L2" (published 10)
    #: The release's ``null_space_project.pt`` (one projection per edited layer, in order), used
    #: instead of projections computed from key statistics; ``nullspace_threshold`` is then unused.
    projection_file: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("nullspace_threshold", "l2"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@METHODS.register("alphaedit")
class AlphaEdit(LocateThenEdit):
    name = "alphaedit"
    description = (
        "AlphaEdit: MEMIT-style edit projected onto the null space of preserved keys "
        "(Fang et al. 2025)"
    )
    Config = AlphaEditConfig
    config: AlphaEditConfig
    presets = published_presets(**{model: {"nullspace_threshold": 2e-2, "l2": 10}
                                   for model in ("gpt2-xl", "gpt-j-6b", "llama-3-8b")})

    def key_statistics(self) -> dict[str, KeyStats]:
        """With ``projection_file`` the projections are the release's and no statistics are needed;
        the file's name and size stand for them in the snapshot, so a resume must use the same
        file."""
        if not self.config.projection_file:
            return super().key_statistics()
        path = Path(self.config.projection_file).expanduser()
        self.imported = read_null_space_projection(path, self.layers, self.key_widths()[0])
        provenance = KeyStats(None, f"projection-{path.name}-{path.stat().st_size}", 0, 0)
        return {module: provenance for module in self.modules}

    def prepare_layers(self) -> None:
        self.projections: dict[int, torch.Tensor] = {}
        self.edited_keys: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            mom2 = self.stats[layer].mom2
            if mom2 is None:
                self.projections[layer] = self.imported[i].to(self.ctx.device)
            else:
                self.projections[layer] = null_space_projection(
                    mom2.to(self.ctx.device), self.config.nullspace_threshold
                )
            self.edited_keys[layer] = torch.zeros_like(self.projections[layer])
            log.info(
                "alphaedit: layer %d keeps a %d-dimensional null space of %d key dimensions (%s)",
                layer,
                round(float(torch.trace(self.projections[layer]))),
                self.projections[layer].shape[0],
                f"threshold {self.config.nullspace_threshold:g}"
                if mom2 is not None
                else self.stats[layer].corpus,
            )

    def state_bytes(self, shape: ModelShape) -> int:
        """A float32 null-space projection and the edited keys' second moment, ``d x d``, per
        layer."""
        return sum(2 * 4 * shape.out_in(m)[1] ** 2 for m in self.modules)

    def layer_delta(self, index: int, keys: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        layer = self.layers[index]
        projection = self.projections[layer]
        lhs = projection @ (keys @ keys.T + self.edited_keys[layer])
        lhs += self.config.l2 * torch.eye(lhs.shape[0], device=lhs.device)
        # The solution already satisfies Delta = Delta P in exact arithmetic; projecting once more
        # keeps it so when a small l2 leaves the solve ill-conditioned in float32.
        return torch.linalg.solve(lhs, projection @ keys @ residual.T).T @ projection

    def after_batch(self, located: LocatedBatch, n: int) -> None:
        for layer, keys in zip(self.layers, self.batch_keys(located, n)):
            # new tensor: snapshots stay
            self.edited_keys[layer] = self.edited_keys[layer] + keys @ keys.T

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            **super().state_dict(),
            **{f"edited_keys.{layer}": self.edited_keys[layer] for layer in self.layers},
        }

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        for layer in self.layers:
            name = f"edited_keys.{layer}"
            if name not in state:
                raise ValueError(
                    f"alphaedit: the snapshot lacks {name}; it was made with other layers"
                )
            self.edited_keys[layer] = state.pop(name).to(self.ctx.device, torch.float32).clone()
        super().load_extra_state(state)
