"""The settings of the editors built on keys and output gradients; each method only changes
defaults.

:class:`EditorCoreConfig` is what every editor of the family reads its rows with: which modules,
which tokens, which sub-batches, which normaliser merge. UltraEdit needs nothing more.
:class:`HypernetConfig` adds the network and its training. One dataclass serves MEND, MALMEN and
RLEdit because they differ in two places only: the update rule (a method's own module) and the
training schedule, which is data here: MEND and MALMEN train on sequences of one batch applied to
the unedited model (``sequence_length=1, depth=1``), RLEdit on long sequences applied to a live
model with back-tracking (``sequence_length=0, depth=10``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ...core.method import MethodConfig, TrainableConfig
from .modules import MODULE_CHOICES, TOKEN_CHOICES


@dataclass(frozen=True)
class EditorCoreConfig(MethodConfig):
    """Where and how the rows (one per token: the edited module's input and output gradient) are
    read."""

    # -- what is edited ---------------------------------------------------------------------------
    layers: tuple[int, ...] = ()  # empty: a band of upper layers (modules.default_layers)
    #: auto | mlp_in (gate and up / c_fc / fc_in) | mlp_out (down / c_proj / fc_out) | mlp_in_out;
    #: with layers and modules both left as they are, a published model gets its release's list
    #: (modules.PUBLISHED_MODULES) and any other model ``default_layers`` with ``auto``
    modules: str = "auto"
    #: where keys and gradients are read: the positions whose logits predict an answer token
    #: (``answer``: the last prompt token and every answer token but the last, the releases'
    #: ``token: ans``) or every input position (``all``: the prompt and the answer without its last
    #: token, the releases' ``token: all``)
    tokens: str = "answer"
    #: 0: each record's keys and gradients come from its own mean answer-token loss, so they do not
    #: depend on the batch; >0: the releases' sub-batches: a batch is sorted by length and cut into
    #: sub-batches of this many records, each with one token-mean loss, and the training losses are
    #: summed over such sub-batches (MALMEN ``data/base.py:32-52``, ``editor/base.py:78-161``)
    sub_batch: int = 0
    # exact (Chan's merge) | release (the releases' merge; net.RunningNormaliser)
    normaliser: str = "exact"

    def __post_init__(self) -> None:
        if self.modules not in MODULE_CHOICES:
            raise ValueError(
                f"modules must be one of {', '.join(MODULE_CHOICES)}, got {self.modules!r}"
            )
        if self.tokens not in TOKEN_CHOICES:
            raise ValueError(
                f"tokens must be one of {', '.join(TOKEN_CHOICES)}, got {self.tokens!r}"
            )
        if self.normaliser not in ("exact", "release"):
            raise ValueError(f"normaliser must be exact or release, got {self.normaliser!r}")
        if self.sub_batch < 0:
            raise ValueError(f"sub_batch must be 0 or more, got {self.sub_batch}")
        following = getattr(super(), "__post_init__", None)  # TrainableConfig's, for HypernetConfig
        if following is not None:
            following()


@dataclass(frozen=True)
class HypernetConfig(EditorCoreConfig, TrainableConfig):
    # -- the network -------------------------------------------------------------------------------
    rank: int = 1920  # of each residual block
    n_blocks: int = 2
    # cap the rank at (key_size + value_size) // 4 (editbench's; net.effective_rank)
    cap_rank: bool = True
    #: initial learned edit lr; None: ``edit_scale`` times the module's output RMS over the mean
    #: key-pseudo-key product at answer tokens, measured on the train split (docs/hypernetworks.md)
    edit_lr: float | None = None
    edit_scale: float = 0.3
    # -- training ----------------------------------------------------------------------------------
    meta_lr: float = 1e-4  # Adam, for the network's weights and the ridge strength
    lr_meta_lr: float | None = None  # Adam, for the learned edit lr; None: 5% of its initial value
    max_grad_norm: float = 1.0
    train_batch: int = 10  # edits per batch during training
    sequence_length: int = 1  # edit batches per optimiser step; 0: every train batch (one pass)
    depth: int = 1  # back-tracking: step t is scored on the paraphrases of its last `depth` batches
    decay: float = 0.95  # weight of the batch k steps back: decay ** k
    loc_coef: float = 1.0  # KL to the model before the step, on unrelated prompts
    reg_coef: float = 0.0  # L2 penalty on each step's update, sum of squares over modules
    reg_grad: bool = True  # False: compute the L2 term without gradient (as the released RLEdit)
    #: optimiser steps at most; 0: keep the network at its initialisation; None: no cap (the
    #: releases stop at the end of ``max_epochs`` or of the sequence). 600 is editbench's safety cap
    max_steps: int | None = 600
    # clip the accumulated meta-gradient after every step of a sequence (RLEdit's release)
    clip_every_step: bool = False
    val_every: int = 26  # optimiser steps between validations (each also saves the training state)
    patience: int = 3  # stop after this many validations without improvement (the plateau)
    val_fraction: float = 0.2  # share of the train split held out for the validation loss
    #: validation records at most: every validation walks all of them, so on a large train split
    #: (ZsRE's 160k) an uncapped share would cost more than the training steps (MEND caps it too)
    max_val_records: int = 1000
    # passes over the train split at most; 0: no limit (MEND/MALMEN releases: 1)
    max_epochs: int = 0
    # max_train_records (TrainableConfig): RLEdit's steps each walk the whole train split, so its
    # training time grows with the split's size unless this caps it; unset, models of 1B parameters
    # or more train on 10,000 records (TrainableConfig.train_record_cap)
    warm_up: bool = True  # fill the normalisers from the train split before training (releases: no)
    # step t's paraphrase losses reach the window's updates (releases: only t's)
    backtrack_grad: bool = True
    select_best: bool = True  # keep the best network by validation loss; False: the last (releases)
    trainable: str = "all"  # all | lr: train only the learned edit lrs (an ablation)
    paraphrases_per_edit: int = 1  # sampled per edit and step for the generalisation loss
    neighbours_per_edit: int = 1  # sampled per edit and step for the locality loss
    # -- editing -----------------------------------------------------------------------------------
    update_normaliser_at_edit: bool = False  # True: test-time statistics shape the edits (release)

    #: fields that change how edits are applied, not what is trained (left out of the cache key)
    EDIT_TIME_FIELDS = frozenset({"update_normaliser_at_edit"})
    #: fields that fix the network's shape; a trained editor must agree with the run on them
    ARCHITECTURE_FIELDS = frozenset({"layers", "modules", "rank", "n_blocks", "cap_rank"})

    def __post_init__(self) -> None:
        if self.trainable not in ("all", "lr"):
            raise ValueError(f"trainable must be 'all' or 'lr', got {self.trainable!r}")
        if not self.warm_up and (self.edit_lr is None or self.max_steps == 0):
            raise ValueError(
                "warm_up=false needs edit_lr set and max_steps >= 1: the edit lr rule and an "
                "untrained network both need the normaliser's statistics"
            )
        positive = ("rank", "n_blocks", "train_batch", "depth", "val_every", "patience",
                    "paraphrases_per_edit", "neighbours_per_edit", "max_val_records")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        super().__post_init__()
        for name in ("sequence_length", "max_epochs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ValueError(f"max_steps must be 0 or more (or none), got {self.max_steps}")
        for name in ("meta_lr", "max_grad_norm", "edit_scale"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("loc_coef", "reg_coef"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.lr_meta_lr is not None and self.lr_meta_lr < 0:
            raise ValueError(f"lr_meta_lr must be 0 or more, got {self.lr_meta_lr}")
        if not 0 < self.decay <= 1:
            raise ValueError(f"decay must be in (0, 1], got {self.decay}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    def training_fields(self) -> dict[str, object]:
        """Every field that shapes the trained network (the cache key of ``editbench run``)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in self.EDIT_TIME_FIELDS
        }


#: What the MALMEN and RLEdit releases share (docs/hypernetworks.md, "Presets"): one Adam at 1e-5
#: for the network, the learned edit lr (from 1e-6) and the ridge; clip norm 1; no warm-up of the
#: normaliser, whose release merge runs per module and sub-batch, in training and while editing;
#: the rank uncapped; no cap on steps; no selection by validation (the last network is kept).
#: Each method's ``release`` preset adds its batch sizes, network size and schedule.
RELEASE_PRESET: dict[str, object] = {
    "edit_lr": 1e-6, "meta_lr": 1e-5, "lr_meta_lr": 1e-5, "max_grad_norm": 1.0, "warm_up": False,
    "select_best": False, "patience": 1_000_000, "update_normaliser_at_edit": True,
    "normaliser": "release", "cap_rank": False, "max_steps": None,
}
#: The MALMEN release's data settings (``config/data/zsre.yaml:2-3``): 512 edits per batch in
#: length-sorted sub-batches of 32, one pass over the train split (``config/editor/malmen.yaml:8``).
MALMEN_RELEASE_DATA: dict[str, object] = {"train_batch": 512, "sub_batch": 32, "max_epochs": 1}
#: The RLEdit release's data settings (c6576a1, ``config/dataset/*.yaml:2-3``): 20 edits per batch
#: in sub-batches of 4, for RLEdit and for its MEND and MALMEN baselines.
RLEDIT_RELEASE_DATA: dict[str, object] = {"train_batch": 20, "sub_batch": 4}
