"""Does a long stream of small edits survive a bf16 model? The check behind
``tests/test_precision.py`` and ``editbench selfcheck``.

It applies the same seeded stream of small rank-1 updates (each about 1/1000 of a weight's size, the
scale of one batch of a lifelong editor's update) to three copies of one micro Llama model: float32;
bf16 through :class:`~editbench.core.precision.MasterWeights`; bf16 written directly. It reports how
far each bf16 copy ends from the float32 one, relative to how far the float32 copy moved, for the
edited weight and for the logits of a fixed input (computed in float32 from each copy's weights, so
that they measure the edits, not bf16 arithmetic).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ...core.models import ModelLayout
from ...core.precision import MasterWeights


@dataclass(frozen=True)
class PrecisionReport:
    batches: int
    device: str
    #: |W_bf16 - W_fp32| / |W_fp32 - W_start|, with float32 master copies and without; the first
    #: should equal ``weight_error_one_rounding``, the error of rounding the float32 result once
    weight_error_one_rounding: float
    weight_error_master: float
    weight_error_rounded: float
    #: the same ratio for the logits of a fixed input
    logit_error_master: float
    logit_error_rounded: float

    def as_dict(self) -> dict:
        return asdict(self)


def _micro_llama(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)
    return LlamaForCausalLM(config).eval()


def _relative(a: torch.Tensor, b: torch.Tensor, moved: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / moved.float().norm())


@torch.no_grad()
def precision_check(device: str | torch.device = "cpu", batches: int = 2000, seed: int = 0,
                    update_scale: float = 1e-3) -> PrecisionReport:
    device = torch.device(device)
    # every copy starts from the same bf16-representable weights, so only the edits' rounding
    # differs
    base = _micro_llama(seed).to(torch.bfloat16).float()
    name = f"{ModelLayout.of(base).mlp_out_name(1)}.weight"
    models = {"fp32": base.to(device), "master": _micro_llama(seed).to(device, torch.bfloat16),
              "rounded": _micro_llama(seed).to(device, torch.bfloat16)}
    writers = {"fp32": MasterWeights(models["fp32"]), "master": MasterWeights(models["master"]),
               "rounded": MasterWeights(models["rounded"], enabled=False)}
    start = models["fp32"].get_parameter(name).detach().clone()
    tokens = torch.randint(0, 256, (4, 16),
                           generator=torch.Generator().manual_seed(seed)).to(device)
    logits_start = models["fp32"](tokens).logits.float()
    out_size, in_size = start.shape
    # per element ~ 1e-3 of |w|
    scale = update_scale * float(start.abs().mean()) * (out_size * in_size) ** 0.5
    stream = torch.Generator().manual_seed(seed + 1)
    for _ in range(batches):
        u = torch.randn(out_size, 1, generator=stream)
        v = torch.randn(1, in_size, generator=stream)
        delta = (scale * (u @ v) / (u.norm() * v.norm())).to(device)
        for writer in writers.values():
            writer.add(name, delta)
    final = {key: model.get_parameter(name).detach().clone() for key, model in models.items()}
    # forward in float32 (the bf16 weights exactly), so the figure measures the weights, not bf16
    # arithmetic
    logits = {key: model.float()(tokens).logits for key, model in models.items()}
    moved, logits_moved = final["fp32"] - start, logits["fp32"] - logits_start
    return PrecisionReport(
        batches=batches, device=str(device),
        weight_error_one_rounding=_relative(final["fp32"].to(torch.bfloat16), final["fp32"], moved),
        weight_error_master=_relative(final["master"], final["fp32"], moved),
        weight_error_rounded=_relative(final["rounded"], final["fp32"], moved),
        logit_error_master=_relative(logits["master"], logits["fp32"], logits_moved),
        logit_error_rounded=_relative(logits["rounded"], logits["fp32"], logits_moved),
    )
