"""PRUNE: perturbation-restrained sequential model editing (Ma et al., ICLR 2025).

The paper bounds how far sequential edits move a model's general abilities by the condition number
of the edited matrix ``W + Delta``, where ``Delta`` is the sum of every edit's update so far, and
finds that sequential editing lets ``Delta``'s largest singular values grow far past those of
``W``. PRUNE keeps ``Delta``'s singular vectors and shrinks each of its singular values ``s`` that
reaches ``W``'s largest, ``m``, with a slowly growing function (the paper's Eq. for ``F``; the
release's ``func_log`` / ``func_logn`` / ``func_linear``):

    F(s) = log_a(s) - log_a(m) + m     for s >= m   (``reduce_type`` log: a = e; log2, log1_5,
    F(s) = s / 2 + m / 2               for s >= m    log1_2: a = 2, 1.5, 1.2; linear)

so ``F(m) = m``, ``F`` rises and the singular values of ``W + Delta'`` stay near ``W``'s while the
edit directions are kept. Values below ``m`` are left as they are.

Release: mjy1111/PRUNE at 046c2a6, ``easyeditor/editors/bi_editor_loadw.py``: ``func_linear``,
``func_log``, ``func_logn`` at lines 48-68; the restraint in ``read_weights`` lines 183-264 (for
locate-then-edit methods): ``Delta`` = the saved weights after ``seq_num`` edits minus the
original, its SVD and the original's largest singular value ``s0[0]``, ``F`` applied, ``Delta``
rebuilt from its first ``rank(Delta)`` singular triples and written as ``W + Delta'``. The edits
themselves were made without restraint (``edit_save.py``), so the release restrains the
*accumulated* perturbation at the point where the model is evaluated. editbench does the same
after every batch: the method keeps the unrestrained sum ``Delta`` (lifelong state), puts the model
back to ``W + Delta`` before the next batch is edited, and leaves ``W + F(Delta)`` to be scored.
It adds ``U_k (F(s_k) - s_k) V_k^T`` for the restrained values only, which equals the release's
rebuild but for the singular directions beyond ``Delta``'s numerical rank that the release drops.
``README.md`` names ``log`` as the setting to use (``--reduce_type=log``); it is the default.

The update is MEMIT's; presets are the PRUNE release's MEMIT settings (``hparams/MEMIT/gpt2-xl``,
``gpt-j-6B``, ``llama3-8b``.yaml; for Llama-3-8B: ``v_lr`` 0.5, ``v_weight_decay`` 1e-3,
``clamp_norm_factor`` 4, 10,000 statistics samples). EasyEdit does not ship PRUNE (checked at
zjunlp/EasyEdit 14cea82).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..core.costs import ModelShape
from ..core.method import METHODS
from ..core.models import weight_as_out_in
from ..core.records import EditRecord
from .locate.config import published_presets
from .memit import MEMIT, MEMITConfig

log = logging.getLogger(__name__)

#: the release's ``--reduce_type`` choices: the base of the logarithm, or None for the linear map
REDUCE_TYPES: dict[str, float | None] = {
    "log": math.e, "log2": 2.0, "log1_5": 1.5, "log1_2": 1.2, "linear": None
}


def restrain_singular_values(values: torch.Tensor, bound: float, reduce_type: str) -> torch.Tensor:
    """``F`` applied to the values that reach ``bound`` (``W``'s largest singular value); the rest
    unchanged."""
    base = REDUCE_TYPES[reduce_type]
    over = values >= bound
    if base is None:
        restrained = values / 2 + bound / 2
    else:
        scale = math.log(base)
        restrained = torch.log(values.clamp_min(bound)) / scale - math.log(bound) / scale + bound
    return torch.where(over, restrained, values)


def restrained_perturbation(
    delta: torch.Tensor, bound: float, reduce_type: str
) -> tuple[torch.Tensor, int]:
    """``Delta'``: ``delta`` with its singular values at or above ``bound`` passed through ``F``,
    and how many were."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    over = s >= bound
    count = int(over.sum())
    if not count:
        return delta, 0
    change = restrain_singular_values(s[over], bound, reduce_type) - s[over]
    return delta + (u[:, over] * change) @ vh[over], count


@dataclass(frozen=True)
class PRUNEConfig(MEMITConfig):
    #: the release's ``--reduce_type``: log (base e), log2, log1_5, log1_2 or linear
    reduce_type: str = "log"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reduce_type not in REDUCE_TYPES:
            raise ValueError(f"reduce_type must be one of {', '.join(REDUCE_TYPES)} (the release's "
                             f"--reduce_type), got {self.reduce_type!r}")


def _release_presets() -> dict[str, dict[str, str | int | float]]:
    llama = {"mom2_update_weight": 15000, "v_lr": 0.5, "v_weight_decay": 1e-3,
             "clamp_norm_factor": 4, "mom2_n_samples": 10_000}
    presets = published_presets(**{
        "gpt2-xl": {"mom2_update_weight": 20000}, "gpt-j-6b": {"mom2_update_weight": 15000},
        "llama-3-8b": llama})
    return {model: {**values, "reduce_type": "log"} for model, values in presets.items()}


@METHODS.register("prune")
class PRUNE(MEMIT):
    name = "prune"
    description = (
        "PRUNE: MEMIT with the accumulated update's singular values above the weight's largest "
        "shrunk by a log (Ma et al. 2025)"
    )
    Config = PRUNEConfig
    config: PRUNEConfig
    presets = _release_presets()

    @classmethod
    def left_out_of_default_run(cls) -> str:
        """Why the default run (``default_methods``) leaves it out: on the pocket model its 200
        edits and their checkpoints add about 20 s (as MEMIT's own row does) to a run that must stay
        under five minutes cold on two cores, which leaves a new row about 10 s
        (docs/benchmarks.md); ``--methods prune`` runs it."""
        return ("prune (about 20 s on the pocket model, as MEMIT; run it with --methods prune)")

    def prepare_layers(self) -> None:
        """The largest singular value of each edited weight as it was before any edit, and the
        unrestrained (``raw``) and restrained sums of the updates, both zero."""
        conv1d = self.ctx.layout.family.conv1d
        self.bounds: dict[int, float] = {}
        self.raw: dict[int, torch.Tensor] = {}
        self.restrained: dict[int, torch.Tensor] = {}
        for layer, module in zip(self.layers, self.modules):
            weight = weight_as_out_in(self.ctx.model.get_submodule(module), conv1d).detach()
            self.bounds[layer] = float(torch.linalg.matrix_norm(weight.float(), ord=2))
            self.raw[layer] = torch.zeros(weight.shape, device=self.ctx.device)
            self.restrained[layer] = self.raw[layer]

    def state_bytes(self, shape: ModelShape) -> int:
        """The unrestrained and the restrained sums of the updates, float32, per layer."""
        return sum(2 * 4 * math.prod(shape.out_in(m)) for m in self.modules)

    def _shift(self, source: dict[int, torch.Tensor], target: dict[int, torch.Tensor]) -> None:
        """Move each edited weight from ``W + source`` to ``W + target``."""
        for layer, module in zip(self.layers, self.modules):
            if source[layer] is not target[layer]:
                self.ctx.add_to_weight(module, target[layer] - source[layer])

    def apply(self, batch: Sequence[EditRecord]) -> None:
        self._shift(self.restrained, self.raw)  # the release edits the unrestrained model
        super().apply(batch)
        self._restrain()
        self._shift(self.raw, self.restrained)

    def layer_delta(self, index: int, keys: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        delta = super().layer_delta(index, keys, residual)
        layer = self.layers[index]
        self.raw[layer] = self.raw[layer] + delta  # new tensor: snapshots stay
        return delta

    def _restrain(self) -> None:
        for layer in self.layers:
            self.restrained[layer], count = restrained_perturbation(
                self.raw[layer], self.bounds[layer], self.config.reduce_type)
            if count:
                log.debug("prune: layer %d: %d singular values of the perturbation at or above "
                          "the weight's largest (%.4g) restrained", layer, count,
                          self.bounds[layer])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            **super().state_dict(),
            **{f"raw_perturbation.{layer}": self.raw[layer] for layer in self.layers},
            **{f"spectral_bound.{layer}": torch.tensor(self.bounds[layer], dtype=torch.float64)
               for layer in self.layers},
        }

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        for layer in self.layers:
            names = (f"raw_perturbation.{layer}", f"spectral_bound.{layer}")
            missing = [name for name in names if name not in state]
            if missing:
                raise ValueError(f"prune: the snapshot lacks {', '.join(missing)}; it was made "
                                 "with other layers")
            self.raw[layer] = state.pop(names[0]).to(self.ctx.device, torch.float32).clone()
            self.bounds[layer] = float(state.pop(names[1]))
        self._restrain()
        super().load_extra_state(state)
