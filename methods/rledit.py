"""RLEdit: Reinforced Lifelong Editing (Li et al., ICML 2025).

MEND and MALMEN train their network on the unedited model and freeze it, so in lifelong editing
it meets a model that its own earlier edits have moved. RLEdit keeps MALMEN's network and update
rule and changes only how it is trained: as a policy over a whole sequence of edit batches
applied to a live model (RLEdit §3, the editing process as a Markov decision process whose state
is the model's parameters and whose action is the update). Step t's loss (the negative reward)

    L_t = sum_{k < depth} decay^k  NLL(paraphrases of batch t-k | W_t)        (memory back-tracking)
        + loc_coef * sum_{k < depth} decay^k  KL(p_{W_{t-1}} || p_{W_t}) on their unrelated prompts
        + reg_coef * ||delta W_t||^2                                           (update size)

is summed over the sequence, its meta-gradients accumulate, and the optimiser steps once per
sequence. Two choices of ours, both documented in docs/hypernetworks.md:

- Back-tracking reaches the past: the paraphrase terms of L_t carry gradient into the updates of
  steps t-depth+1 ... t (truncated back-propagation through the sequence), so the network learns
  to make edits that later edits do not undo. The released code sends every step's gradient only
  into that step's own update.
- The L2 term takes effect: the released code computes it on updates made without gradient, so it
  changes nothing; here it is differentiated (``reg_grad=False`` restores the release).

Defaults are the authors' (rank 1024, 4 blocks, depth 10, decay 0.95, loc 0.6, L2 1e-4), with the
edit lr scaled to the model (see ``HypernetConfig.edit_lr``) and training run to a validation
plateau.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.method import METHODS
from .hypernet import RELEASE_PRESET, RLEDIT_RELEASE_DATA, HypernetConfig, model_presets
from .malmen import MALMEN


@dataclass(frozen=True)
class RLEditConfig(HypernetConfig):
    rank: int = 1024
    n_blocks: int = 4
    sequence_length: int = 0  # a sequence is one pass over the train split
    depth: int = 10
    decay: float = 0.95
    loc_coef: float = 0.6
    reg_coef: float = 1e-4
    max_steps: int | None = 60
    val_every: int = 3
    meta_lr: float = 1e-4


@METHODS.register("rledit")
class RLEdit(MALMEN):
    name = "rledit"
    description = (
        "MALMEN's network trained over edit sequences on a live model, RL-style (Li et al. 2025)"
    )
    Config = RLEditConfig
    #: ``paper``: the defaults (trained over many sequences to a validation plateau, L2 and
    #: back-tracking effective). ``release``: the released ``train``/``run`` (c6576a1,
    #: ``editor/rledit.py:99-192``): one sequence of up to 400 batches of 20 (``num_seq``; at most
    #: one pass, ``training.py``), meta-gradients into each step's own update only, the L2 term
    #: without gradient, the accumulated gradient
    #: clipped after every step, a single Adam step, the last network kept. ``untrained``: the
    #: network at initialisation (normaliser filled, edit lr by the rule); ``lr-only``: only the
    #: edit lrs learn.
    presets = {
        **model_presets("rledit"),
        "paper": {},
        "release": {**RELEASE_PRESET, **RLEDIT_RELEASE_DATA, "sequence_length": 400, "max_steps": 1,
                    "reg_grad": False, "backtrack_grad": False, "clip_every_step": True},
        "untrained": {"max_steps": 0},
        "lr-only": {"trainable": "lr"},
    }
