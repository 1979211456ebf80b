"""RECT: regularising an edit by the relative change in weight (Gu et al., EMNLP 2024).

The paper finds that locate-then-edit updates overfit the edited facts by changing the original
weights too much, which costs the model's general abilities (reasoning, NLI, QA). RECT keeps only
the *principal* part of each update: the top ``keep_share`` of its elements ranked by relative
change ``|Delta_ij| / |W_ij|`` keep their values, every other element is set to zero (the paper's
top-k%, Figure 6; k is ``100 * keep_share``, 20 in the release).

The release (JasonForJoy/Model-Editing-Hurt at 8f8d4dc, ``easyeditor/models/rome/rome_main.py``
lines 25-33 and 76-79) applies it to ROME's rank-one update before the update is added, against the
weight as it is at that moment, zeroing the ``int(n * 0.8)`` smallest relative changes of the
``n`` elements (so k = 20). That code is commented out and, as written, assigns the result of a
function that returns nothing; the facts it carries (relative to the current weight, the count
rounded down on the zeroed side, ties broken arbitrarily) are what is built here. EasyEdit does not
ship RECT (checked at zjunlp/EasyEdit 14cea82).

Here RECT sits on MEMIT's update (``layer_delta``), layer by layer, as the issue asks: each layer's
least-squares change is sparsified before it is added, and the next layer's residual is read from
the model as it now is, so the layers above make up part of what was dropped below. A weight that
is exactly zero has an infinite relative change where its update is not zero (it is kept) and none
where the update is zero too.

Presets are the RECT release's MEMIT settings for GPT-2 XL and GPT-J (``hparams/MEMIT/``, the same
as MEMIT's own); the release gives LLaMA-1 7B, not Llama-3-8B, so there is no ``@llama-3-8b``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.method import METHODS
from ..core.models import weight_as_out_in
from .locate.config import published_presets
from .memit import MEMIT, MEMITConfig

#: the release's share of elements zeroed (``set_min_to_zero(..., 0.8)``), as the share kept
RELEASE_KEEP_SHARE = 0.2


def keep_largest_relative_changes(
    delta: torch.Tensor, weight: torch.Tensor, keep_share: float
) -> torch.Tensor:
    """``delta`` with all but its ``n - int(n * (1 - keep_share))`` elements of largest
    ``|delta / weight|`` set to zero (RECT's regularised update)."""
    n = delta.numel()
    kept = n - int(n * (1.0 - keep_share))
    relative = delta.abs() / weight.abs().to(delta.dtype)
    relative = torch.nan_to_num(relative, nan=0.0, posinf=float("inf"))  # 0 / 0: no change
    chosen = torch.topk(relative.flatten(), kept, sorted=False).indices
    mask = torch.zeros(n, dtype=torch.bool, device=delta.device)
    mask[chosen] = True
    return torch.where(mask.view_as(delta), delta, torch.zeros((), dtype=delta.dtype,
                                                               device=delta.device))


@dataclass(frozen=True)
class RECTConfig(MEMITConfig):
    #: share of each update's elements kept, by largest relative change (the paper's k / 100)
    keep_share: float = RELEASE_KEEP_SHARE

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.keep_share <= 1:
            raise ValueError(f"keep_share must be in (0, 1], got {self.keep_share} (the release "
                             f"keeps {RELEASE_KEEP_SHARE}; 1 is plain MEMIT)")


def _release_presets() -> dict[str, dict[str, str | int | float]]:
    presets = published_presets(**{
        "gpt2-xl": {"mom2_update_weight": 20000}, "gpt-j-6b": {"mom2_update_weight": 15000},
        "llama-3-8b": {}})
    return {model: {**values, "keep_share": RELEASE_KEEP_SHARE}
            for model, values in presets.items() if model in ("gpt2-xl", "gpt-j-6b", "gpt-j")}


@METHODS.register("rect")
class RECT(MEMIT):
    name = "rect"
    description = (
        "RECT: MEMIT's update keeping only its top 20% elements by relative weight change "
        "(Gu et al. 2024)"
    )
    Config = RECTConfig
    config: RECTConfig
    presets = _release_presets()

    @classmethod
    def left_out_of_default_run(cls) -> str:
        """Why the default run (``default_methods``) leaves it out: on the pocket model its 200
        edits and their checkpoints add about 20 s (as MEMIT's own row does) to a run that must stay
        under five minutes cold on two cores, which leaves a new row about 10 s
        (docs/benchmarks.md); ``--methods rect`` runs it."""
        return ("rect (about 20 s on the pocket model, as MEMIT; run it with --methods rect)")

    def layer_delta(self, index: int, keys: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        delta = super().layer_delta(index, keys, residual)
        module = self.ctx.model.get_submodule(self.modules[index])
        weight = weight_as_out_in(module, self.ctx.layout.family.conv1d).detach()
        return keep_largest_relative_changes(delta, weight.to(delta.device), self.config.keep_share)
