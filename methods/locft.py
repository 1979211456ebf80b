"""LocFT-BF ("Fine-tuning Done Right in Model Editing", Yang et al., ICLR 2026; ICT-STAR/LocFT).

Plain fine-tuning, run the way fine-tuning is normally run: breadth-first. Every epoch visits every
edit of the batch once, in a fresh random order, in mini-batches of ``chunk`` records, each taking
one Adam step on the mean over its records of their mean target-token NLL; one Adam optimiser serves
the whole call (``fine-tune.py:102-184`` at ICT-STAR/LocFT 51db785). The paper's point is that the
fine-tuning baselines of earlier editing codebases run depth-first (EasyEdit's FT with
``batch_size: 1`` optimises one edit after another), drop the end-of-sequence token from the target,
and tune layers chosen for ROME; LocFT-BF keeps the EOS in the target (the release appends
``tok.eos_token`` as text, ``fine-tune.py:80``), tunes a located layer, and has no norm bound.

The loop is FT's (``methods/ft.py``): a chunk whose loss is below 1e-2 takes no step (``:175-177``)
and an epoch whose loss, weighted by chunk size, is below 1e-2 ends it (``:173``, ``:182-184``).
The per-epoch shuffle draws from the run's seeded generator (the release's ``random.shuffle`` is
unseeded), so a resumed run repeats it; a batch that fits in one mini-batch is not shuffled, since
the order of one step's rows changes nothing but float rounding (``epoch_chunks``). Reshuffled
mini-batches replay, per record, what the tuned layer computes before its MLP output projection
(``lower_blocks.py``), and the head runs only at the answer positions (``answer_positions.py``).
The release edits its whole data file in one call (``main_exp.sh:49-52``), which is
``--batch-size`` equal to ``--edits``; in a lifelong run each batch is one call, so a batch of at
most ``chunk`` edits is one mini-batch per epoch and every step sees every edit of the batch
(fidelity/locft-release/README.md measures both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..core.method import METHODS
from ..core.records import EditRecord
from .ft import FineTune, FTConfig
from .objectives import masked_target_nll


@dataclass(frozen=True)
class LocFTConfig(FTConfig):
    """Defaults: the release's Llama-3-8B file, its layer 22 of 32 read as a share of the depth."""

    layer: int | None = None  # None: 22/32 of the depth
    lr: float = 5e-4
    steps: int = 25  # epochs (the release's num_steps)
    chunk: int = 100  # records per mini-batch (the release's batch_size)
    norm_constraint: float | None = None
    bias: bool = False  # the release matches ``mlp.down_proj.weight`` alone
    # mlp_out: the MLP output projection's weight | block: every parameter of the layer
    scope: str = "mlp_out"
    eos: bool = True  # append the tokenizer's end-of-sequence token to every target

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scope not in ("mlp_out", "block"):
            raise ValueError(f"scope must be mlp_out or block, got {self.scope!r}")


#: ICT-STAR/LocFT hparams/*.yaml (51db785): batch_size 100, 25 epochs each. Each file is for one
#: checkpoint (its ``model_name_or_path``, line 1; ``CHECKPOINTS``), its layer located by the
#: paper's sweep on that checkpoint; editbench picks a preset by the model's shape, so a base
#: Llama-3-8B or a Mistral-7B-Instruct gets the settings tuned for the other checkpoint of that
#: shape.
PRESETS = {
    "llama-3-8b": {"layer": 22, "lr": 5e-4},  # llama3-8b.yaml: model.layers.22.mlp.down_proj.weight
    "qwen2.5-7b": {"layer": 6, "lr": 5e-4},  # qwen2.5-7b.yaml: model.layers.6.mlp.down_proj.weight
    # mistral-7b.yaml: model.layers.23 (whole block)
    "mistral-7b": {"layer": 23, "lr": 5e-5, "scope": "block"},
    # editbench's: ten times the lr, for small models, where a lifelong batch of 10 edits gets 25
    # small steps
    "small-model": {"lr": 5e-3},
}
#: The checkpoint each release file names (``hparams/*.yaml:1``).
CHECKPOINTS = {
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B-Instruct (hparams/llama3-8b.yaml)",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct (hparams/qwen2.5-7b.yaml)",
    "mistral-7b": "mistralai/Mistral-7B-v0.1 (hparams/mistral-7b.yaml)",
}


@METHODS.register("locft-bf")
class LocFTBF(FineTune):
    name = "locft-bf"
    description = (
        "breadth-first fine-tuning of a located layer, EOS in the target (Yang et al. 2026)"
    )
    Config = LocFTConfig
    presets = PRESETS
    preset_checkpoints = CHECKPOINTS
    objective = staticmethod(masked_target_nll)
    default_depth = (22, 32)

    def edited_parameters(self) -> list[str]:
        if self.config.scope == "mlp_out":
            return super().edited_parameters()
        prefix = self.ctx.layout.block_name(self.layer()) + "."
        return [name for name, _ in self.ctx.model.named_parameters() if name.startswith(prefix)]

    def target(self, record: EditRecord) -> str:
        eos = getattr(self.ctx.tokenizer, "eos_token", None)
        return record.target_new + eos if self.config.eos and eos else record.target_new

    def chunks_repeat(self, n_records: int, size: int) -> bool:
        """Fresh chunks every epoch, unless one mini-batch holds the whole batch (below)."""
        return size >= n_records

    def epoch_chunks(self, batch: Sequence[EditRecord], size: int) -> list[Sequence[EditRecord]]:
        """A fresh order every epoch, drawn from the run's generator, cut into mini-batches. A
        batch that fits in one mini-batch is that mini-batch every epoch, in its own order: a
        shuffle would only reorder the rows of the same step (the loss is a mean over its
        records), so none is drawn, and the step repeats exactly, which lets its passes be
        replayed (``lower_blocks.py``). That is every batch of the default lifelong run (turns
        of 10 against mini-batches of 100) and the release's own call on up to 100 edits."""
        if self.chunks_repeat(len(batch), size):
            return [batch]
        order = torch.randperm(len(batch), generator=self.ctx.generator).tolist()
        return super().epoch_chunks([batch[i] for i in order], size)

    @staticmethod
    def epoch_loss(losses: list[float], sizes: list[int]) -> float:
        """The release's epoch loss: the chunks' losses weighted by their sizes."""
        return sum(loss * size for loss, size in zip(losses, sizes)) / sum(sizes)
