"""What computing MEMIT/AlphaEdit key statistics costs, known before anything runs (for
``editbench plan``).

Works on a model built on the ``meta`` device (shapes only, no weights). The formulas:

- tokens streamed = samples x mean tokens per sample (each sample cut at ``max_len``, as
  :func:`.stats._accumulate` does); without a measured mean, ``samples x max_len`` is an upper
  bound;
- layers run = the highest edited layer + 1: the pass stops there (:func:`.stats.stopping_after`),
  so the forward cost per token is about ``2 x`` the parameters of those blocks (attention's
  quadratic term and the embedding lookup left out), and time ~ tokens x that / achieved FLOP/s;
- memory held = the float32 sums ``d_in x d_in x 4`` bytes per edited layer for the whole pass,
  plus, per forward pass, one module's keys cast to float32 (``batch_tokens x d_in x 4``);
- nothing to stream where the statistics are imported (``stats_import``, ``projection_file``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from ...core.models import ModelLayout, weight_as_out_in
from ...core.tokenize import PairEncoder
from .config import LocateConfig

FLOAT32_BYTES = 4


@dataclass(frozen=True)
class KeyStatsCost:
    samples: int
    tokens: int
    tokens_is_upper_bound: bool  # no measured mean: every sample counted at max_len
    layers_run: int
    layers_total: int
    flops_per_token: int  # forward pass up to the last edited layer
    matrix_bytes: int  # the d_in x d_in float32 sums of every edited layer, held for the whole pass
    batch_key_bytes: int  # one module's keys of one forward pass, cast to float32

    @property
    def flops(self) -> int:
        return self.tokens * self.flops_per_token

    def seconds(self, flops_per_second: float) -> float:
        """Time at an achieved (not peak) FLOP rate of the device."""
        return self.flops / flops_per_second


def max_sample_tokens(model: nn.Module, config: LocateConfig) -> int:
    """Where a sample is cut: the model's context, at most ``stats_batch_tokens`` (as the statistics
    do)."""
    context = (
        getattr(model.config, "max_position_embeddings", None)
        or getattr(model.config, "n_positions", 1024)
    )
    return min(int(context), config.stats_batch_tokens)


def mean_sample_tokens(encoder: PairEncoder, texts: Sequence[str], max_len: int) -> float:
    """The mean token count of ``texts`` cut at ``max_len``: measure it on a few hundred samples of
    the corpus."""
    if not texts:
        raise ValueError("mean_sample_tokens needs at least one text")
    return sum(min(len(encoder.encode_text(text)), max_len) for text in texts) / len(texts)


def key_stats_cost(
    model: nn.Module, config: LocateConfig, mean_tokens: float | None = None
) -> KeyStatsCost:
    """The cost of the key statistics ``config`` asks for on ``model`` (a ``meta`` model will
    do)."""
    layout = ModelLayout.of(model)
    layers = [layout.resolve_layer(layer) for layer in config.layers]
    modules = [model.get_submodule(layout.mlp_out_name(layer)) for layer in layers]
    widths = [weight_as_out_in(module, layout.family.conv1d).shape[1] for module in modules]
    imported = bool(config.stats_import or getattr(config, "projection_file", ""))
    max_len = max_sample_tokens(model, config)
    if mean_tokens is not None and not 0 < mean_tokens <= max_len:
        raise ValueError(
            f"mean_tokens={mean_tokens} must lie in (0, {max_len}], samples being cut at "
            f"{max_len} tokens"
        )
    per_sample = max_len if mean_tokens is None else mean_tokens
    layers_run = 0 if imported else max(layers) + 1
    blocks = model.get_submodule(layout.family.layers)
    block_params = sum(p.numel() for block in list(blocks)[:layers_run] for p in block.parameters())
    return KeyStatsCost(
        samples=0 if imported else config.mom2_n_samples,
        tokens=0 if imported else round(config.mom2_n_samples * per_sample),
        tokens_is_upper_bound=mean_tokens is None and not imported,
        layers_run=layers_run,
        layers_total=layout.n_layers,
        flops_per_token=2 * block_params,
        matrix_bytes=0 if imported else sum(w * w for w in widths) * FLOAT32_BYTES,
        batch_key_bytes=0 if imported else config.stats_batch_tokens * max(widths) * FLOAT32_BYTES,
    )
