"""The locate-then-edit loop that MEMIT and AlphaEdit share; they differ only in the layer update.

One batch of edits (MEMIT, Meng et al., ICLR 2023, Alg. 1):

1. optimise a target value ``z_i`` for every edit at the output of the last edited layer
   (:mod:`.values`);
2. for each edited layer ``l`` in ascending order: read the keys ``K`` (inputs of the MLP output
   projection at the subject's last token, averaged over context prefixes) and what the last edited
   layer now outputs, ``h_i``; the residual ``R = (z - h) / (number of edited layers left)`` spreads
   the change over the remaining layers; the method turns ``(K, R)`` into a weight change
   ``Delta`` (:meth:`LocateThenEdit.layer_delta`) and adds it to that projection.

All linear algebra is float32 whatever the model's dtype; the weight change is cast on addition.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch

from ...core.costs import (
    MethodCost,
    ModelShape,
    PhaseCost,
    RunShape,
    attention_bytes,
    backward_bytes,
    forward_flops,
    logits_bytes,
    master_copy_bytes,
    weights_bytes,
)
from ...core.method import EditContext, EditMethod
from ...core.models import weight_as_out_in
from ...core.records import EditRecord
from .config import LocateConfig
from .cost import key_stats_cost
from .hooks import mean_keys, read_at
from .prompts import LocatedBatch, generate_prefixes, locate
from .published import import_release_stats
from .stats import KeyStats, key_second_moments, resolve_corpus
from .values import optimise_values

log = logging.getLogger(__name__)

#: see ``LocateThenEdit.cost``
VALUE_GRAPH = 2.5


def _text_tensor(text: str) -> torch.Tensor:
    return torch.tensor(list(text.encode()), dtype=torch.uint8)


def _tensor_text(tensor: torch.Tensor) -> str:
    return bytes(tensor.tolist()).decode()


class LocateThenEdit(EditMethod):
    """Base of MEMIT-family methods. Subclasses implement :meth:`layer_delta` and may keep lifelong
    state in :meth:`after_batch` / :meth:`state_dict`."""

    Config: ClassVar[type[LocateConfig]] = LocateConfig
    config: LocateConfig

    def __init__(self, config: LocateConfig, context: EditContext) -> None:
        super().__init__(config, context)
        layout = context.layout
        self.layers = tuple(layout.resolve_layer(layer) for layer in config.layers)
        if list(self.layers) != sorted(self.layers):
            raise ValueError(
                f"{self.name}: layers must ascend (the last one holds the target values), "
                f"got {config.layers}"
            )
        self.modules = [layout.mlp_out_name(layer) for layer in self.layers]  # range-checks too
        self.prefixes: tuple[str, ...] = ()
        self.stats: dict[int, KeyStats] = {}

    # -- the protocol ------------------------------------------------------------------------------
    def edited_parameters(self) -> list[str]:
        return [f"{module}.weight" for module in self.modules]

    def prepare(self) -> None:
        ctx, config = self.ctx, self.config
        first = self.edited_parameters()[0]
        dtype = ctx.parameter(first).dtype
        if dtype != torch.float32 and not ctx.masters.keeps(first):
            log.warning(
                "%s edits %s weights without float32 master copies: changes below that dtype's "
                "resolution are lost; the published runs edit float32 weights",
                self.name,
                str(dtype).removeprefix("torch."),
            )
        stats = self.key_statistics()
        self.stats = {layer: stats[module] for layer, module in zip(self.layers, self.modules)}
        first = stats[self.modules[0]]
        log.info("%s: key statistics of layers %s over %d samples (%d tokens) of %s", self.name,
                 ",".join(map(str, self.layers)), first.n_samples, first.n_tokens, first.corpus)
        self.prefixes = generate_prefixes(ctx.model, ctx.encoder, config.context_prefixes,
                                          config.context_prefix_tokens, ctx.seed, ctx.device)
        if self.prefixes:
            log.info("%s: context prefixes %s", self.name, list(self.prefixes))
        self.prepare_layers()

    def key_statistics(self) -> dict[str, KeyStats]:
        """``E[k k^T]`` of every edited module: the release's files where ``stats_import`` names
        them, else editbench's cache, else computed over the corpus."""
        ctx, config = self.ctx, self.config
        if config.stats_import:
            return import_release_stats(
                Path(config.stats_import).expanduser(),
                self.modules,
                self.key_widths(),
                config.mom2_n_samples,
                str(getattr(ctx.model.config, "_name_or_path", "")),
            )
        corpus = resolve_corpus(config.stats_corpus, config.stats_hub, ctx.task)
        return key_second_moments(
            ctx.model,
            ctx.encoder,
            self.modules,
            corpus,
            config.mom2_n_samples,
            ctx.cache_dir,
            ctx.device,
            config.stats_batch_tokens,
        )

    def key_widths(self) -> list[int]:
        """The width of the keys (inputs) of every edited module."""
        conv1d = self.ctx.layout.family.conv1d
        return [
            weight_as_out_in(self.ctx.model.get_submodule(m), conv1d).shape[1] for m in self.modules
        ]

    def apply(self, batch: Sequence[EditRecord]) -> None:
        if not self.stats:
            raise RuntimeError(f"{self.name}: prepare() must run before apply()")
        ctx, n = self.ctx, len(batch)
        z_block = ctx.layout.block_name(self.layers[-1])
        targets = optimise_values(
            ctx.model, ctx.encoder, z_block, batch, self.prefixes, self.config, ctx.device,
            ctx.layout,
        )
        located = locate(ctx.encoder, batch, self.prefixes, with_target=False).to(ctx.device)
        for i, module in enumerate(self.modules):
            (keys,), now = read_at(ctx.model, located, [module], block=z_block)
            assert now is not None
            residual = (targets - now[located.group == 0]).T / (len(self.layers) - i)
            delta = self.layer_delta(i, mean_keys(keys, located, n), residual)
            ctx.add_to_weight(module, delta)
        self.after_batch(located, n)

    def requirements(self) -> list[str]:
        """The key statistics' corpus must be at hand unless published statistics are imported."""
        config = self.config
        if config.stats_import or getattr(config, "projection_file", ""):
            return []
        spec = config.stats_corpus
        if spec == "auto":
            spec = (
                "task"
                if self.ctx.task is not None and self.ctx.task.corpus() is not None
                else "hub"
            )
        if spec == "hub" and importlib.util.find_spec("datasets") is None:
            return [
                f"{self.name}: its key statistics stream {config.stats_hub} from the Hugging Face "
                f"hub, which needs `pip install \"editbench[hub]\"`; or give a local corpus "
                f"(--param {self.name}.stats_corpus=PATH) or published statistics "
                f"(--param {self.name}.stats_import=FOLDER)"
            ]
        if spec not in ("task", "hub") and not Path(spec).expanduser().is_file():
            return [
                f"{self.name}: stats_corpus={spec!r} is not a file; give auto, task, hub or a "
                "local text file"
            ]
        return []

    def state_bytes(self, shape: ModelShape) -> int:
        """Lifelong state on the device beyond the key statistics; AlphaEdit adds its matrices."""
        return 0

    def cost(self, shape: ModelShape, run: RunShape) -> MethodCost:
        """Statistics: a forward pass up to the last edited layer over the corpus, one float32
        ``d x d`` second moment per edited layer kept (in host memory once computed). Editing: the
        value optimisation's forward and backward passes from the top down to the last edited layer
        (``v_steps`` per chunk of ``v_chunk`` records, each prompt once per prefix plus its KL
        prompt), then a float32 solve per layer."""
        config = self.config
        d_in = [shape.out_in(m)[1] for m in self.modules]
        stats = sum(4 * d * d for d in d_in)
        last = self.layers[-1]
        # every sample counted at its cut length: an upper bound
        streamed = key_stats_cost(shape.meta, config)
        length = min(config.stats_batch_tokens, shape.max_positions)
        # the forward stops inside the last edited MLP: about two hidden-sized values per token
        # alive and the activation's intermediate-sized ones, beside the keys' float32 copies (and
        # eager scores)
        held = (
            config.stats_batch_tokens
            * (2 * shape.hidden + shape.activation_temporaries * shape.intermediate)
            * shape.dtype_bytes
            + attention_bytes(shape, config.stats_batch_tokens, length)
        )
        # the sums accumulate on the device while the corpus streams; then they move to host memory
        statistics = PhaseCost(
            "statistics",
            stats + held + streamed.batch_key_bytes * len(d_in),
            streamed.flops,
            (
                f"{streamed.layers_run} of {streamed.layers_total} layers, at most "
                f"{streamed.tokens:,} tokens; once per model and corpus (cached)"
                if streamed.tokens
                else "imported"
            ),
        )
        prompts = 1 + config.context_prefixes + 1
        tokens = run.tokens_per_record + (
            config.context_prefix_tokens if config.context_prefixes else 0
        )
        chunk_tokens = min(config.v_chunk, run.batch_size) * prompts * tokens
        above = shape.n_layers - last
        solve = 3 * 4 * max(d_in) ** 2
        per_token = forward_flops(shape, 1) * (1 + 2 * above / shape.n_layers)
        flops = config.v_steps * run.edits * prompts * tokens * per_token
        # VALUE_GRAPH: the value optimisation keeps about 2.5 times the activations one backward
        # pass over its rows saves (measured on micro models, where the logits are small; the logits
        # are counted as for any backward pass)
        graph = (
            VALUE_GRAPH
            * backward_bytes(shape, chunk_tokens, above, with_logits=False, length=tokens)
            + 2 * logits_bytes(shape, chunk_tokens)
        )
        editing = PhaseCost("editing", max(int(graph), solve), flops,
                            f"at most {config.v_steps} value steps")
        resident = (
            weights_bytes(shape)
            + master_copy_bytes(shape, run, self.edited_parameters())
            + self.state_bytes(shape)
        )
        # the second moments stay in host memory (``stats.py``); each solve moves one layer's to the
        # device, which the solve's three d x d float32 matrices count
        return MethodCost(self.name, resident, (statistics, editing), host_bytes=stats)

    # -- what a method adds ------------------------------------------------------------------------
    def prepare_layers(self) -> None:
        """Per-layer precomputation from ``self.stats`` (AlphaEdit's projections); none by
        default."""

    def layer_delta(self, index: int, keys: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """The change ``(d_out, d_in)`` of edited layer ``self.layers[index]`` that maps the batch's
        keys ``(d_in, n)`` to the residual ``(d_out, n)`` while protecting what the layer stores."""
        raise NotImplementedError

    def after_batch(self, located: LocatedBatch, n: int) -> None:
        """Called once the batch is written; lifelong methods update their state here."""

    def batch_keys(self, located: LocatedBatch, n: int) -> list[torch.Tensor]:
        """The batch's keys ``(d_in, n)`` at every edited layer, read from the model as it is
        now."""
        keys, _ = read_at(self.ctx.model, located, self.modules)
        return [mean_keys(k, located, n) for k in keys]

    # -- lifelong state ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Which statistics and prefixes the edits so far were made with: a resume must use the
        same."""
        first = self.stats[self.layers[0]]
        return {
            "key_stats.corpus": _text_tensor(first.corpus),
            "key_stats.samples": torch.tensor(
                [self.stats[layer].n_samples for layer in self.layers]
            ),
            "key_stats.tokens": torch.tensor([self.stats[layer].n_tokens for layer in self.layers]),
            "context_prefixes": _text_tensor("\0".join(self.prefixes)),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        corpus = _tensor_text(state.pop("key_stats.corpus"))
        samples, tokens = (
            state.pop("key_stats.samples").tolist(),
            state.pop("key_stats.tokens").tolist(),
        )
        mine = self.state_dict()
        if (corpus, samples, tokens) != (
            _tensor_text(mine["key_stats.corpus"]),
            mine["key_stats.samples"].tolist(),
            mine["key_stats.tokens"].tolist(),
        ):
            raise ValueError(
                f"{self.name}: the snapshot's edits used key statistics over {samples} samples "
                f"({tokens} tokens) of {corpus}, but this run loaded "
                f"{mine['key_stats.samples'].tolist()} "
                f"of {_tensor_text(mine['key_stats.corpus'])}; resume with the same corpus"
            )
        prefixes = _tensor_text(state.pop("context_prefixes"))
        self.prefixes = tuple(prefixes.split("\0")) if prefixes else ()
        self.load_extra_state(state)

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            raise ValueError(
                f"{self.name}: the snapshot holds state it does not keep: {sorted(state)}"
            )
