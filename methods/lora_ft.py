"""Continual LoRA fine-tuning with merging, the baseline WikiBigEdit (Thede et al., ICML 2025)
finds ahead of the editors at scale.

Each turn (one ``apply`` call) gets a fresh LoRA adapter (Hu et al. 2022) on the attention's query
and value projections, trained with Adam on the turn's edits for ``epochs`` passes in mini-batches
of ``chunk`` records, the learning rate following the release's schedule (a linear warm-up over the
first tenth of the epochs, then a cosine decay, stepped once per epoch). The adapter is then merged
into the weights at ``merge_alpha``: W <- (1 - a) W + a (W + s B A) = W + a s B A, with
s = ``alpha / rank``, and removed, so the next turn trains a new adapter on the merged model and
every scoring backend sees plain weights. WikiBigEdit runs one turn per Wikidata snapshot
(``run_lifelong_edit.py``); ``--batch-size`` sets what a turn is here. Release lines are in
docs/memory-and-retrieval.md. The adapters come from peft (``pip install "editbench[lora]"``).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..core.costs import (
    MethodCost,
    ModelShape,
    PhaseCost,
    RunShape,
    backward_bytes,
    forward_flops,
    master_copy_bytes,
    weights_bytes,
)
from ..core.method import METHODS, EditMethod, MethodConfig, MethodSetupError
from ..core.records import EditRecord
from .objectives import token_mean_target_nll

log = logging.getLogger(__name__)

#: the projections a LoRA adapter goes on when ``target_modules`` is "auto": the release's query
#: and value projections, or GPT-2's fused query-key-value projection where a model has neither
AUTO_TARGETS = ("q_proj", "v_proj")
FUSED_TARGETS = ("c_attn",)


@dataclass(frozen=True)
class LoRAFTConfig(MethodConfig):
    rank: int = 4
    alpha: float = 8.0
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("auto",)  # module-name suffixes; auto: q_proj, v_proj
    #: Adam's rate: the release's 5e-3 times its mini-batch over 256 (``lora_main.py:171``)
    lr: float = 5e-3 * 32 / 256
    epochs: int = 10
    chunk: int = 32  # records per Adam step
    warmup: float = 0.1  # fraction of the epochs (rounded down) with a linear warm-up
    merge_alpha: float = 0.25
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"rank must be at least 1, got {self.rank}")
        if self.lr <= 0 or self.alpha <= 0:
            raise ValueError(f"lr and alpha must be positive, got lr={self.lr}, "
                             f"alpha={self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be within [0, 1), got {self.dropout}")
        if self.epochs < 1 or self.chunk < 1:
            raise ValueError(f"epochs and chunk must be at least 1, got epochs={self.epochs}, "
                             f"chunk={self.chunk}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be within [0, 1), got {self.warmup}")
        if not 0 < self.merge_alpha <= 1:
            raise ValueError(f"merge_alpha must be within (0, 1], got {self.merge_alpha}")


def schedule(epoch: int, epochs: int, warmup: int) -> float:
    """The release's learning-rate factor at ``epoch`` (``lora_main.py:179-189``): linear from 0
    over ``warmup`` epochs, then half a cosine down to 1e-6. With 10 epochs the first has factor
    0, so 9 epochs move the adapter, as in the release."""
    if epoch < warmup:
        return epoch / warmup
    return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup))) + 1e-6


def _peft():
    try:
        import peft
    except ImportError:
        return None
    return peft


@METHODS.register("lora-ft")
class LoRAFT(EditMethod):
    name = "lora-ft"
    description = ("continual LoRA fine-tuning, each turn's adapter merged into the weights "
                   "(WikiBigEdit's baseline, Thede et al. 2025)")
    Config = LoRAFTConfig
    #: (module, extra): the optional library it is built on, and the extra that installs it
    extra = ("peft", "lora")
    #: WikiBigEdit's ``hydra/experiments/lora_merge_*.yaml`` over ``hparams/LoRA/*.yaml``
    presets = {"wikibigedit": {"rank": 4, "alpha": 8.0, "dropout": 0.1,
                               "target_modules": ("q_proj", "v_proj"), "lr": 5e-3 * 32 / 256,
                               "epochs": 10, "chunk": 32, "merge_alpha": 0.25}}

    @classmethod
    def missing_extra(cls) -> str | None:
        """The one line naming the extra to install where peft is missing (None where it is
        installed): the preflight's finding."""
        module, extra = cls.extra
        if importlib.util.find_spec(module) is not None:
            return None
        return (f"{cls.name} needs {module}, which is not installed: "
                f'pip install "editbench[{extra}]"')

    def requirements(self) -> list[str]:
        missing = self.missing_extra()
        return [missing] if missing else []

    @classmethod
    def left_out_of_default_run(cls) -> str:
        """Why the default run (every registered method, ``default_methods``) leaves it out: on
        the pocket model its 200 edits and their checkpoints add about 17 s to a run that must stay
        under five minutes cold on two cores, and at the release's settings 10-edit turns move no
        metric (docs/benchmarks.md); ``--methods lora-ft`` runs it."""
        return cls.missing_extra() or (
            "lora-ft (about 17 s on the pocket model, no metric moved by 10-edit turns at the "
            "release's settings; run it with --methods lora-ft)")

    def target_modules(self) -> list[str]:
        """The full names of the linear modules that carry an adapter."""
        wanted = self.config.target_modules
        names = [name for name, _ in self.ctx.model.named_modules()]
        if wanted == ("auto",):
            found = [n for n in names if n.rsplit(".", 1)[-1] in AUTO_TARGETS]
            return found or [n for n in names if n.rsplit(".", 1)[-1] in FUSED_TARGETS]
        found = [n for n in names if n.rsplit(".", 1)[-1] in wanted]
        if not found:
            raise MethodSetupError(f"lora-ft: target_modules {','.join(wanted)} names no module "
                                   "of this model; name the last part of its projections' names, "
                                   "e.g. --param lora-ft.target_modules=q_proj,v_proj")
        return found

    def edited_parameters(self) -> list[str]:
        return [f"{name}.weight" for name in self.target_modules()]

    def cost(self, shape: ModelShape, run: RunShape) -> MethodCost:
        """Every chunk's forward and backward pass runs through the whole model (adapters sit in
        every block); the adapters, their gradients and Adam's moments are small beside it. Each
        adapted projection also keeps, per token, what its side path saves for the backward pass:
        the (dropped-out) input, the rank-sized middle, the path's output and its sum with the
        layer's own output (the larger dimension: out_features on every fused projection). Without
        them the plan was 0.71-0.79 of the measured peak on micro models (issue 33's selfcheck)."""
        config: LoRAFTConfig = self.config  # type: ignore[assignment]
        edited = self.edited_parameters()
        adapter = sum(config.rank * sum(shape.param_shape(n)) for n in edited)
        chunk_tokens = min(config.chunk, run.batch_size) * run.tokens_per_record
        side_paths = chunk_tokens * 4 * sum(sum(shape.param_shape(n)) + max(shape.param_shape(n))
                                            + config.rank for n in edited)
        transient = (backward_bytes(shape, chunk_tokens, shape.n_layers,
                                    length=run.tokens_per_record)
                     + side_paths
                     + 4 * 4 * adapter
                     + max((shape.param_numel(n) for n in edited), default=0) * 4)
        flops = config.epochs * run.edits * run.tokens_per_record * 3 * forward_flops(shape, 1)
        return MethodCost(
            self.name,
            weights_bytes(shape) + master_copy_bytes(shape, run, edited),
            (PhaseCost("editing", transient, flops, f"{config.epochs} epochs per turn"),),
        )

    def apply(self, batch: Sequence[EditRecord]) -> None:
        peft = _peft()
        if peft is None:
            raise MethodSetupError(self.missing_extra() or "lora-ft: peft cannot be imported")
        config: LoRAFTConfig = self.config  # type: ignore[assignment]
        model = self.ctx.model
        targets = self.target_modules()
        # LoRA's initialisation and dropout draw from torch's global generator; seed it from the
        # run's generator and give it back as it was (docs/architecture.md, the method contract)
        seed = int(torch.randint(0, 2**62, (1,), generator=self.ctx.generator))
        cuda = range(torch.cuda.device_count()) if self.ctx.device.type == "cuda" else []
        trainable = {name: p.requires_grad for name, p in model.named_parameters()}
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            lora = peft.LoraConfig(r=config.rank, lora_alpha=config.alpha,
                                   lora_dropout=config.dropout, target_modules=targets,
                                   fan_in_fan_out=self.ctx.layout.family.conv1d)
            peft.inject_adapter_in_model(lora, model)
            try:
                layers = {name: model.get_submodule(name) for name in targets}
                self._train(batch, [p for layer in layers.values()
                                    for p in layer.parameters() if p.requires_grad])
                with torch.no_grad():
                    deltas = {name: self._delta(layer) for name, layer in layers.items()}
            finally:
                _remove_adapters(model, targets)
                for name, p in model.named_parameters():
                    p.requires_grad_(trainable.get(name, False))
        for name, delta in deltas.items():
            self.ctx.add_to_weight(name, delta)

    def _delta(self, layer: nn.Module) -> torch.Tensor:
        """The merged update a s B A, (out_features, in_features), in float32."""
        a = layer.lora_A["default"].weight.float()
        b = layer.lora_B["default"].weight.float()
        return self.config.merge_alpha * layer.scaling["default"] * (b @ a)

    def _train(self, batch: Sequence[EditRecord], params: list[nn.Parameter]) -> None:
        """The release's loop (``lora_main.py:170-283``): the turn's records in order, cut into
        chunks; one Adam step per chunk on the mean NLL of the chunk's target tokens (the model's
        own ``loss`` with the prompt masked); the schedule stepped once per epoch."""
        config: LoRAFTConfig = self.config  # type: ignore[assignment]
        warmup = int(config.warmup * config.epochs)
        optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        pairs = [(r.prompt, r.target_new) for r in batch]
        encoded = self.ctx.encoder.encode_many(pairs)
        for epoch in range(config.epochs):
            for group in optimizer.param_groups:
                group["lr"] = config.lr * schedule(epoch, config.epochs, warmup)
            for start in range(0, len(encoded), config.chunk):
                chunk = self.ctx.encoder.collate(encoded[start:start + config.chunk])
                chunk = chunk.to(self.ctx.device)
                logits = self.ctx.model(input_ids=chunk.input_ids,
                                        attention_mask=chunk.attention_mask, use_cache=False).logits
                loss = token_mean_target_nll(logits, chunk)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        log.debug("lora-ft: last chunk's loss %.4f", loss.item())


def _remove_adapters(model: nn.Module, targets: Sequence[str]) -> None:
    """Put each wrapped module's own layer back, so no adapter module or parameter is left (the
    weights are then changed through ``add_to_weight`` alone)."""
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        wrapped = getattr(parent, child)
        base = getattr(wrapped, "base_layer", None)
        if base is not None:
            setattr(parent, child, base)
    if hasattr(model, "peft_config"):
        del model.peft_config
