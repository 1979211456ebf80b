"""Fine-tuning baselines: FT-L and FT-M.

Both tune one MLP output projection (``down_proj``/``c_proj``) with Adam for a few steps per batch
and clamp each weight to within ``norm_constraint`` (L-infinity) of its value before the batch, the
norm-constrained fine-tuning of Zhu et al. (2020) that ROME reports as FT-L. They differ only in
the objective:

- ``ft-l``: ROME's FT-L loss, where the prompt's last position scores every target token.
- ``ft-m``: EasyEdit's FT-M, teacher-forced cross-entropy on the target tokens with the prompt
  tokens masked out of the loss.

Defaults suit the pocket-world model; for 7B models EasyEdit uses layer 21, lr 5e-4 and a norm
constraint of 5e-5. ``layer=None`` picks two thirds of the depth (21 of 32 layers, as EasyEdit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..core.method import METHODS, EditMethod, MethodConfig
from ..core.records import EditRecord
from .objectives import last_prompt_position_nll, masked_target_nll


@dataclass(frozen=True)
class FTConfig(MethodConfig):
    layer: int | None = None  # None: two thirds of the depth
    lr: float = 5e-3
    steps: int = 25
    norm_constraint: float = 2e-2  # max |change| of any weight within one batch
    stop_loss: float = 1e-2  # stop early once the batch loss is this small (as ROME's ft does)

    def __post_init__(self) -> None:
        for field in ("lr", "norm_constraint"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")


class FineTune(EditMethod):
    Config = FTConfig
    objective: Callable[[torch.Tensor, object], torch.Tensor]

    def _layer(self) -> int:
        layout = self.ctx.layout
        layer = self.config.layer if self.config.layer is not None else (2 * layout.n_layers) // 3
        return layout.resolve_layer(layer)

    def edited_parameters(self) -> list[str]:
        return [f"{self.ctx.layout.mlp_out_name(self._layer())}.weight"]

    def apply(self, batch: Sequence[EditRecord]) -> None:
        config: FTConfig = self.config  # type: ignore[assignment]
        (name,) = self.edited_parameters()
        weight = self.ctx.parameter(name)
        original = weight.detach().clone()
        encoder = self.ctx.encoder
        encoded = encoder.collate(encoder.encode_many([(r.prompt, r.target_new) for r in batch])).to(self.ctx.device)
        weight.requires_grad_(True)
        optimizer = torch.optim.Adam([weight], lr=config.lr)
        try:
            for _ in range(config.steps):
                logits = self.ctx.model(input_ids=encoded.input_ids, attention_mask=encoded.attention_mask).logits
                loss = type(self).objective(logits, encoded)
                if loss.item() < config.stop_loss:
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    weight.copy_(torch.clamp(weight, original - config.norm_constraint,
                                             original + config.norm_constraint))
        finally:
            weight.requires_grad_(False)
            weight.grad = None


@METHODS.register("ft-l")
class FTL(FineTune):
    name = "ft-l"
    description = "fine-tune one MLP layer, L-inf constrained, ROME's last-position loss (Zhu et al. 2020)"
    objective = staticmethod(last_prompt_position_nll)


@METHODS.register("ft-m")
class FTM(FineTune):
    name = "ft-m"
    description = "fine-tune one MLP layer, L-inf constrained, loss on target tokens only (EasyEdit FT-M)"
    objective = staticmethod(masked_target_nll)
