"""UltraEdit: training-, subject- and memory-free lifelong editing (Gu et al. 2025,
arXiv 2505.14679).

The hypernetwork editors learn how to turn an edit's keys and output gradients into a weight
update. UltraEdit learns nothing: each turn (one ``apply`` batch) it reads the edited modules'
keys and output gradients at the answer tokens on the live model, adds those rows to a running
normaliser per weight shape whose statistics are never reset ("lifelong normalisation"), and takes
the update in closed form (release ``editor/ultraedit.py:60-120``):

    z_i     = [k_i || g_i]  ->  [k^_i || g^_i] = (z_i - mean) / (std + eps)     (this turn included)
    v_i     = -lr * ||k^_i||^2 * g^_i
    delta W = argmin_D ||K D - V||^2 + ridge ||D||^2 = (K^T K + ridge I)^-1 K^T V    (raw keys K)

It is the shared core of ``methods/hypernet`` (rows, normalisers, application) with this rule in
place of a network, so it has no ``fit`` and nothing to train or cache. docs/hypernetworks.md
("UltraEdit") says what follows the paper, what follows the release and what is editbench's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..core.method import METHODS, EditContext
from ..core.tokenize import EncodedPair
from .answer_positions import head_at, narrowed
from .chosen_modules import ChosenModules
from .hypernet import EditorCore, EditorCoreConfig
from .hypernet.modules import KeysAndGrads
from .hypernet.net import RunningNormaliser
from .hypernet.ridge import ridge_solve


@dataclass(frozen=True)
class UltraEditConfig(EditorCoreConfig):
    #: module paths to edit (``model.layers.29.mlp.down_proj,...``), as the release's run scripts
    #: list them; empty: ``layers`` and ``modules`` choose (a band of upper layers by default)
    module_names: tuple[str, ...] = ()
    #: records per sub-batch, each with one token-mean loss (release: ``dataset.batch_size=10``)
    sub_batch: int = 10
    #: the step of the pseudo value changes. The release's 1e-6 (``config/editor/ultraedit.yaml:2``,
    #: kept by every model preset) is sized for 4096- to 14336-wide keys and edits nothing on the
    #: pocket model's 128-wide ones; 1e-3 is the pocket model's (docs/hypernetworks.md, "UltraEdit")
    lr: float = 1e-3
    ridge: float = 1.0  # lambda of the solve, in raw-key units (release: the identity, fixed)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("lr", "ridge"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def ultraedit_update(keys: torch.Tensor, grads: torch.Tensor, normaliser: RunningNormaliser,
                     lr: float, ridge: float) -> torch.Tensor:
    """One module's (key_size, value_size) update from its rows of one turn: normalise with the
    lifelong statistics, weigh each normalised gradient by its normalised key's squared norm,
    then solve for the weight change that realises those value changes on the raw keys."""
    normalised = normaliser(torch.cat((keys, grads), -1))
    keys_hat, grads_hat = normalised.split([keys.shape[1], grads.shape[1]], -1)
    values = -lr * keys_hat.pow(2).sum(-1, keepdim=True) * grads_hat
    return ridge_solve(
        keys, values, torch.tensor(math.log(ridge), dtype=keys.dtype, device=keys.device)
    )


def _paths(prefix: str, layers: range, suffix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{layer}.{suffix}" for layer in layers)


#: The release's edited modules per model (and dataset where they differ), from its ``run.sh``
#: (XiaojieGu/UltraEdit 0beb222). Named after editbench's architectures (core/architectures.py),
#: so a run on a published model takes the first by itself; ``-DATASET`` ones are chosen by hand.
RELEASE_MODULES: dict[str, tuple[str, ...]] = {
    # run.sh:3-26 (ZsRE, WikiBigEdit, UltraEditBench): gate 11-15 and up 18-24
    "llama-3-8b": _paths("model.layers", range(11, 16), "mlp.gate_proj")
    + _paths("model.layers", range(18, 25), "mlp.up_proj"),
    # run.sh:9-13 (FEVER): gate and up of 22-30
    "llama-3-8b-fever": _paths("model.layers", range(22, 31), "mlp.gate_proj")
    + _paths("model.layers", range(22, 31), "mlp.up_proj"),
    # run.sh:32-55 (all four datasets): down of 29-30
    "mistral-7b": _paths("model.layers", range(29, 31), "mlp.down_proj"),
    # run.sh:61-65 and 79-83 (ZsRE, UltraEditBench): fc_out of 18-26
    "gpt-j-6b": _paths("transformer.h", range(18, 27), "mlp.fc_out"),
    "gpt-j-6b-wikibigedit": _paths("transformer.h", range(19, 27), "mlp.fc_out"),  # run.sh:73-77
    "gpt-j-6b-fever": _paths("transformer.h", range(25, 27), "mlp.fc_out"),  # run.sh:67-71
    # run.sh:89-99 and 107-111 (ZsRE, FEVER, UltraEditBench): up then gate of 18-26
    "qwen2.5-7b": _paths("model.layers", range(18, 27), "mlp.up_proj")
    + _paths("model.layers", range(18, 27), "mlp.gate_proj"),
    "qwen2.5-7b-wikibigedit": _paths("model.layers", range(19, 27), "mlp.up_proj")  # run.sh:101-105
    + _paths("model.layers", range(19, 27), "mlp.gate_proj"),
}
#: What the release does beyond the modules: lr 1e-6 (``config/editor/ultraedit.yaml:2``), the
#: MALMEN/RLEdit merge of the normaliser, once per module and sub-batch (``nets.py:16-24``,
#: ``editor/ultraedit.py:116-120``), sub-batches of 10 (``run.sh``, ``dataset.batch_size=10``).
#: Its turn is ``dataset.n_edits`` = 100 edits (``run.sh``, ``data/base.py:39-58``): one solve
#: over the rows of 10 sub-batches. A turn is one ``apply``, i.e. the run's ``--batch-size``,
#: which no method preset sets: the release's turns are ``ultraedit@release --batch-size 100``
#: (fidelity/ultraedit-release/release-turns.yaml); at the default ``--batch-size 10`` each turn
#: is a single sub-batch.
RELEASE_SETTINGS: dict[str, object] = {
    "lr": 1e-6,
    "normaliser": "release",
    "sub_batch": 10,
    "ridge": 1.0,
}


@METHODS.register("ultraedit")
class UltraEdit(ChosenModules, EditorCore):
    name = "ultraedit"
    description = "training-free closed-form edits under lifelong normalisation (Gu et al. 2025)"
    Config = UltraEditConfig
    #: A published model's preset: the release's modules and lr for it (its run scripts edit them at
    #: 1e-6). ``release``: the release's settings on any model, the normaliser merge included;
    #: ``paper``: the defaults (the exact running statistics of every row seen).
    presets = {
        **{
            name: {"module_names": modules, "lr": 1e-6}
            for name, modules in RELEASE_MODULES.items()
        },
        "paper": {},
        "release": RELEASE_SETTINGS,
    }

    def __init__(self, config: UltraEditConfig, context: EditContext) -> None:
        super().__init__(config, context)
        self.lifelong = nn.ModuleDict({
            key: RunningNormaliser(key_size + value_size, config.normaliser)
            for key, (key_size, value_size) in self.shapes.items()
        }).to(context.device)

    def normalisers(self) -> dict[str, RunningNormaliser]:
        return dict(self.lifelong.items())

    def _read(self, encoded: Sequence[EncodedPair], loss, sub_batch: int = 0) -> KeysAndGrads:
        """The core's pass with the head run only at the answer positions, which are all the loss
        reads (``answer_positions.py``): on a real vocabulary the logits at every position of a
        turn of 100 records are gigabytes in float32. The keys and gradients are read inside the
        blocks, where they were."""
        answers = narrowed(self.ctx.encoder.collate(encoded).to(self.ctx.device))
        if answers.index is None:
            return super()._read(encoded, loss, sub_batch)
        with head_at(self.ctx.model, answers):
            return super()._read(
                encoded, lambda logits, _batch: loss(answers.read(logits), answers.batch),
                sub_batch)

    def shifts(self, observed: KeysAndGrads) -> dict[str, torch.Tensor]:
        config: UltraEditConfig = self.config  # type: ignore[assignment]
        out = {}
        for module in self.modules:
            key, _ = self.slots[module.name]
            keys = observed.keys[module.name].to(self.ctx.device)
            grads = observed.grads[module.name].to(self.ctx.device)
            out[module.name] = ultraedit_update(
                keys, grads, self.lifelong[key], config.lr, config.ridge
            )
        return out
