"""Fine-tuning baselines: FT-L and FT-M, run the way ROME and EasyEdit run them.

Both tune one MLP output projection (``down_proj``/``c_proj``/``fc_out``: its weight, and its bias
where it has one, as ROME's ``ft_main.py:71-76`` selects every parameter of the module) with Adam.
The loop is ROME's and EasyEdit's (``ft_main.py`` in both): one Adam optimiser per edit batch; for
``steps`` epochs, the batch is cut into chunks of ``chunk`` records and each chunk takes one Adam
step (skipped once its loss is below ``stop_loss``), after which the weights are clamped to within
``norm_constraint`` (L-infinity) of their value before the batch, if there is one; an epoch whose
mean loss is below ``stop_loss`` ends the loop. With EasyEdit's ``batch_size: 1`` a batch of 10
edits gets up to 250 Adam steps, not 25. They differ only in the objective:

- ``ft-l``: ROME's FT-L loss, where the prompt's last position scores every target token (EasyEdit's
  ``objective_optimization: prompt_last``).
- ``ft-m``: EasyEdit's FT-M, teacher-forced cross-entropy on the target tokens with the prompt
  tokens masked out of the loss (``objective_optimization: target_new``).

Defaults follow the releases on an unknown model: FT-M as EasyEdit's Llama settings (two thirds of
the depth, lr 5e-4, 25 epochs, one record per step, no constraint); FT-L as ROME's (layer 0, lr
5e-4, 25 epochs, chunks of 128), with an L-infinity bound of 2e-2 that editbench chose for small
models, since ROME's bound shrinks with the model's width (2e-3 to 5e-4 from GPT-2 medium to XL).
Presets named after a model hold the releases' settings for it and are picked by the model.
``@constrained`` is editbench's earlier variant: 25 Adam steps on the whole batch, L-infinity 2e-2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

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
from ..core.method import METHODS, EditMethod, MethodConfig
from ..core.records import EditRecord
from ..core.tokenize import EncodedPair, PairBatch
from .answer_positions import AnswerPositions, at_prompt_last, narrowed
from .lower_blocks import ROW_BYTES, LowerBlocks
from .objectives import last_prompt_position_nll, masked_target_nll


@dataclass(frozen=True)
class FTConfig(MethodConfig):
    layer: int | None = None  # None: two thirds of the depth (EasyEdit's 21 of 32)
    lr: float = 5e-4
    steps: int = 25  # epochs over the batch (ROME's and EasyEdit's num_steps)
    chunk: int = 1  # records per Adam step (EasyEdit's batch_size); 0: the whole batch
    # max |change| of any weight within one batch; None: unconstrained
    norm_constraint: float | None = None
    # tune the module's bias too, where it has one (ROME; EasyEdit on GPT-2 and GPT-J)
    bias: bool = True
    stop_loss: float = 1e-2  # a chunk below it takes no step; an epoch below it ends the loop
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.norm_constraint is not None and self.norm_constraint <= 0:
            raise ValueError(
                f"norm_constraint must be positive (or none), got {self.norm_constraint}"
            )
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.chunk < 0:
            raise ValueError(f"chunk must be 0 (the whole batch) or more, got {self.chunk}")


#: EasyEdit's hparams/FT yamls (zjunlp/EasyEdit 14cea82): llama3-8b, llama-7b and gpt-j-6B at layer
#: 21, lr 5e-4, batch_size 1, norm_constraint false; mistral-7b the same with 5e-5; gpt2-xl at layer
#: 0, batch_size 3, norm 5e-4. FT-M is the same file with objective_optimization target_new.
EASYEDIT = {
    "llama-3-8b": {"layer": 21, "lr": 5e-4, "chunk": 1, "norm_constraint": None},
    "llama-2-7b": {"layer": 21, "lr": 5e-4, "chunk": 1, "norm_constraint": None},
    "gpt-j-6b": {"layer": 21, "lr": 5e-4, "chunk": 1, "norm_constraint": None},
    "mistral-7b": {"layer": 21, "lr": 5e-4, "chunk": 1, "norm_constraint": 5e-5},
    "gpt2-xl": {"layer": 0, "lr": 5e-4, "chunk": 3, "norm_constraint": 5e-4},
}
#: ROME's hparams/FT constrained files (kmeng01/rome 0874014): gpt2-xl_constr.json and
#: EleutherAI_gpt-j-6B_constr.json, layer 0, lr 5e-4, 25 steps, batch 128 (``ft_hparams.py:26``).
ROME_FT_L = {
    "gpt2-xl": {"layer": 0, "lr": 5e-4, "chunk": 128, "norm_constraint": 5e-4},
    "gpt-j-6b": {"layer": 0, "lr": 5e-4, "chunk": 128, "norm_constraint": 5e-5},
}
CONSTRAINED = {"lr": 5e-3, "chunk": 0, "norm_constraint": 2e-2, "bias": False}


class FineTune(EditMethod):
    Config = FTConfig
    objective: Callable[[torch.Tensor, object], torch.Tensor]
    #: the positions of a chunk's logits ``objective`` reads, where the head runs alone
    #: (``answer_positions.py``): the target-predicting ones (FT-M, LocFT-BF) or the prompt's last
    #: (FT-L)
    read_positions: Callable[[PairBatch], AnswerPositions] = staticmethod(narrowed)

    #: where ``layer: None`` falls, as a fraction of the depth (EasyEdit's layer 21 of 32 is two
    #: thirds)
    default_depth = (2, 3)

    def layer(self) -> int:
        layout = self.ctx.layout
        layer = (
            self.config.layer
            if self.config.layer is not None
            else self.default_depth[0] * layout.n_layers // self.default_depth[1]
        )
        return layout.resolve_layer(layer)

    def _module(self) -> str:
        return self.ctx.layout.mlp_out_name(self.layer())

    def edited_parameters(self) -> list[str]:
        module = self.ctx.model.get_submodule(self._module())
        names = [f"{self._module()}.weight"]
        if self.config.bias and getattr(module, "bias", None) is not None:
            names.append(f"{self._module()}.bias")
        return names

    def cost(self, shape: ModelShape, run: RunShape) -> MethodCost:
        """Each chunk's forward and backward pass reaches back to the edited layer; Adam's two
        moments and the gradient of the edited tensors exist while a batch is edited, and so do
        what the replays keep for every record of the batch (``lower_blocks.py``): the recorded
        input of the edited layer, and the outputs of the calls in its block before the tuned
        module (about four hidden-wide and three MLP-wide per token: the embeddings, attention,
        norms, gate and up projections; per record, reshuffled chunks keep at most
        ``ROW_BYTES``)."""
        config: FTConfig = self.config  # type: ignore[assignment]
        edited = self.edited_parameters()
        numel = sum(shape.param_numel(name) for name in edited)
        above = shape.n_layers - self.layer()
        chunk_tokens = min(config.chunk or run.batch_size, run.batch_size) * run.tokens_per_record
        # per edited element: the originals, the gradient, Adam's two moments, and the norm
        # constraint's three temporaries (the bounds and the clamped copy)
        per_element = 4 + (3 if config.norm_constraint is not None else 0)
        batch_tokens = run.batch_size * run.tokens_per_record
        replayed = batch_tokens * (4 * shape.hidden + 3 * shape.intermediate) * shape.dtype_bytes
        if not self.chunks_repeat(run.batch_size, config.chunk or run.batch_size):
            replayed = min(replayed, ROW_BYTES)
        transient = (
            backward_bytes(shape, chunk_tokens, above, length=run.tokens_per_record)
            + per_element * numel * shape.dtype_bytes
            + (batch_tokens * shape.hidden * shape.dtype_bytes if self.layer() > 0 else 0)
            + replayed
        )
        per_token = forward_flops(shape, 1) * (1 + 2 * above / shape.n_layers)
        # at most: training may stop early
        flops = config.steps * run.edits * run.tokens_per_record * per_token
        resident = weights_bytes(shape) + master_copy_bytes(shape, run, edited)
        return MethodCost(
            self.name,
            resident,
            (PhaseCost("editing", transient, flops, f"at most {config.steps} epochs"),),
        )

    def target(self, record: EditRecord) -> str:
        """The text the loss teaches after the prompt (a subclass may append an end-of-sequence)."""
        return record.target_new

    def _loss(self, records: Sequence[EditRecord], encoded: dict[tuple[str, str], EncodedPair],
              lower: LowerBlocks, collated: dict[tuple, object]) -> torch.Tensor:
        """The objective on one chunk: its pairs encoded once per batch (``encoded``) and padded
        into tensors once per chunk (``collated``: EasyEdit's one record per step repeats each
        chunk every epoch), the blocks below the tuned layer replayed once its records have been
        through them (``lower_blocks.py``)."""
        pairs = [(r.prompt, self.target(r)) for r in records]
        key = tuple(pairs)
        if key not in collated:
            padded = self.ctx.encoder.collate([encoded[pair] for pair in pairs]).to(
                self.ctx.device)
            collated[key] = (padded, type(self).read_positions(padded))
        batch, answers = collated[key]

        def forward() -> torch.Tensor:
            return self.ctx.model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
            ).logits

        # the head at the positions the loss reads
        logits = answers.logits(self.ctx.model, lambda: lower(
            pairs, [len(encoded[pair].ids) for pair in pairs], forward))
        return type(self).objective(logits, answers.batch)

    def chunks_repeat(self, n_records: int, size: int) -> bool:
        """Whether every epoch cuts a batch of ``n_records`` into the same chunks of ``size`` in
        the same order (``epoch_chunks``): the replay then records a chunk on its first pass
        (``lower_blocks.py``). ROME and EasyEdit keep the batch's order, so always."""
        return True

    def epoch_chunks(self, batch: Sequence[EditRecord], size: int) -> list[Sequence[EditRecord]]:
        """One epoch's mini-batches, in order: ROME and EasyEdit keep the batch's order every
        epoch."""
        return [batch[start:start + size] for start in range(0, len(batch), size)]

    @staticmethod
    def epoch_loss(losses: list[float], sizes: list[int]) -> float:
        """What the early stop compares with ``stop_loss``: the mean of the chunks' losses."""
        return sum(losses) / len(losses)

    def apply(self, batch: Sequence[EditRecord]) -> None:
        """``steps`` epochs over the batch's chunks, an Adam step per chunk. In a bf16/fp16 model
        Adam trains each tensor's float32 master copy (``core/precision.py``) from the gradient of
        the rounded weights the forward pass used, and the rounded copy is written back after each
        step, as mixed-precision training does; otherwise it trains the parameters themselves."""
        config: FTConfig = self.config  # type: ignore[assignment]
        names = self.edited_parameters()
        params = [self.ctx.parameter(name) for name in names]
        # the parameter itself in float32
        trained = [self.ctx.masters.master(name) for name in names]
        mixed = [t is not p for t, p in zip(trained, params)]
        originals = [t.detach().clone() for t in trained]
        size = config.chunk or len(batch)
        pairs = list(dict.fromkeys((r.prompt, self.target(r)) for r in batch))
        encoded = dict(zip(pairs, self.ctx.encoder.encode_many(pairs)))
        lower = LowerBlocks(self.ctx.model, self.ctx.layout, self.layer(), tuned=self._module(),
                            chunks_repeat=self.chunks_repeat(len(batch), size))
        collated: dict[tuple, object] = {}
        for tensor in (*params, *trained):
            tensor.requires_grad_(True)
        optimizer = torch.optim.Adam(trained, lr=config.lr, weight_decay=config.weight_decay)
        try:
            for _ in range(config.steps):
                losses = []
                chunks = self.epoch_chunks(batch, size)
                for chunk in chunks:
                    loss = self._loss(chunk, encoded, lower, collated)
                    losses.append(loss.item())
                    if losses[-1] >= config.stop_loss:
                        optimizer.zero_grad(set_to_none=True)
                        for p in params:
                            p.grad = None
                        loss.backward()
                        for t, p, is_mixed in zip(trained, params, mixed):
                            if is_mixed:
                                t.grad = p.grad.float()
                        optimizer.step()
                    with torch.no_grad():
                        if config.norm_constraint is not None:
                            for t, original in zip(trained, originals):
                                t.copy_(torch.clamp(t, original - config.norm_constraint,
                                                    original + config.norm_constraint))
                        for t, p, is_mixed in zip(trained, params, mixed):
                            if is_mixed:
                                p.copy_(t)
                if self.epoch_loss(losses, [len(chunk) for chunk in chunks]) < config.stop_loss:
                    break
        finally:
            for tensor in (*params, *trained):
                tensor.requires_grad_(False)
                tensor.grad = None


@dataclass(frozen=True)
class FTLConfig(FTConfig):
    """ROME's FT-L on a model it published no settings for (see the module docstring)."""

    layer: int | None = 0
    chunk: int = 128
    norm_constraint: float | None = 2e-2


@METHODS.register("ft-l")
class FTL(FineTune):
    name = "ft-l"
    description = (
        "fine-tune one MLP layer, L-inf constrained, ROME's last-position loss (Zhu et al. 2020)"
    )
    objective = staticmethod(last_prompt_position_nll)
    read_positions = staticmethod(at_prompt_last)
    Config = FTLConfig
    #: ROME's settings where it published them, EasyEdit's FT-L files for the other models
    presets = {"constrained": CONSTRAINED, **ROME_FT_L,
               **{arch: settings for arch, settings in EASYEDIT.items() if arch not in ROME_FT_L}}


@METHODS.register("ft-m")
class FTM(FineTune):
    name = "ft-m"
    description = "fine-tune one MLP layer, loss on target tokens only, as EasyEdit runs FT-M"
    objective = staticmethod(masked_target_nll)
    presets = {"constrained": CONSTRAINED, **EASYEDIT}
