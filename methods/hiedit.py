"""HiEdit: lifelong model editing with hierarchical reinforcement learning (Wang et al., ACL 2026).

RLEdit perturbs the same dense set of modules for every edit. HiEdit argues that facts live in
different layers and adds a high-level policy that picks, per edit, which of the edited modules
the low-level policy (RLEdit's network and update) may change: a gate network reads the edit's
keys and output gradients at every candidate module and keeps the ``select`` modules with the
highest scores; the other modules are left exactly as they are. In the release
(yangfanww/hiedit 1d76ab4, ``nets.py:113-218``, ``editor/hiedit*.py``):

    h_m    = scale_m * clamp(W_s z_m + b_s, min=0) + shift_m     z_m: module m's normalised rows
    s      = G [mean_rows h_1 || ... || mean_rows h_M] + c       one score per candidate module
    mask   = onehot(top_k(s)) + (s - stopgrad(s))                the straight-through estimator
    dW_m  <- mask_m * dW_m                                       RLEdit's update, kept or zeroed

so the forward value of the mask is 0 or 1 while the scores get the gradient a soft mask would.
Both levels are trained on RLEdit's sequence loss (``methods/rledit.py``) with the update's L2
as the "intrinsic reward for sparsity". Where editbench differs from the release, and why
(docs/hypernetworks.md, "HiEdit"):

- The gate learns from the editing loss. The release writes updates into the weights' ``.data``,
  so its paraphrase and locality losses never reach the mask; its gate's only gradient is the L2
  term's (``editor/hiedit.py:105-108, 211-220``): it learns to drop modules with large updates.
  Here the losses reach each module's mask through the routed updates, so the gate also learns
  which modules' updates help; ``gate_grad=l2`` restores the release's signal.
- The gate's encoders read rows normalised by the low-level network's running statistics of the
  module's shape. The release gives the gate its own normalisers and never updates them, so they
  divide the raw rows by float32's epsilon (``nets.py:155``, ``editor/base.py:83``).
- The baseline the release subtracts from the high-level loss (the loss with every module
  edited, detached: ``editor/hiedit.py:132-212``) is a constant in the gradient; it is not
  computed.
- One selection serves an edit batch (the mean over the batch's rows); the release edits one
  fact per step (``config/dataset/*.yaml:2-3``), which ``--batch-size 1`` reproduces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..core.costs import MethodCost, ModelShape, RunShape
from ..core.method import METHODS, EditContext
from .chosen_modules import ChosenModules
from .hypernet import RELEASE_PRESET
from .hypernet.memory import FLOAT32, TRAINED_PARAMETER_BYTES
from .hypernet.modules import KeysAndGrads, LowRankUpdate
from .malmen import malmen_update
from .mend import mend_update
from .rledit import RLEdit, RLEditConfig

RULES = {"malmen": malmen_update, "mend": mend_update}


def _paths(layers: range, suffix: str) -> tuple[str, ...]:
    return tuple(f"model.layers.{layer}.mlp.{suffix}" for layer in layers)


#: The release's candidate modules (``config/model/*.yaml``, ``edit_modules``), of which the gate
#: keeps ``editor.n_layers=6`` per edit (``config/editor/hiedit*.yaml:2``, ``run.sh:9,21``).
MODEL_PRESETS: dict[str, dict[str, object]] = {
    # llama-3.yaml:7-11 and 24-30: gate 11-15 and up 18-24 (UltraEdit's Llama-3 choice)
    "llama-3-8b": {"module_names": _paths(range(11, 16), "gate_proj")
                   + _paths(range(18, 25), "up_proj"), "select": 6},
    # gemma-2.yaml:7-25: gate and up of 32-40
    "gemma-2-9b": {"module_names": _paths(range(32, 41), "gate_proj")
                   + _paths(range(32, 41), "up_proj"), "select": 6},
}
#: What both released editors share: the MALMEN/RLEdit optimiser settings (RELEASE_PRESET: Adam at
#: 1e-5, edit lr from 1e-6, clip 1, the last network kept), back-tracking 10 at decay 0.95
#: (``hiedit*.yaml:4-5``), gate width 256 (``:3``), one edit per step
#: (``config/dataset/*.yaml:2-3``)
#: in one sequence of ``num_seq=2000`` (``run.sh:6``; at most one pass here) and one optimiser step
#: (``n_epochs: 1``, ``editor/hiedit.py:245-248``), each step's losses reaching its own update
#: only, the gradient clipped after every step (``:295-309``), the gate trained by the L2 term.
#: The normaliser is the exact merge: HiEdit's own (``nets.py:17-30``) skips a one-row batch's
#: variance instead of turning NaN, as ``normaliser=release`` (MALMEN's) does.
RELEASE_COMMON: dict[str, object] = {
    **RELEASE_PRESET, "normaliser": "exact", "depth": 10, "decay": 0.95, "gate_hidden": 256,
    "train_batch": 1, "sequence_length": 2000, "max_steps": 1, "backtrack_grad": False,
    "clip_every_step": True, "gate_grad": "l2",
}


@dataclass(frozen=True)
class HiEditConfig(RLEditConfig):
    #: modules the gate keeps per edit batch; 0: half of the candidates, rounded up (the paper's
    #: "half of the layers per edit"; the release's ``editor.n_layers=6`` of Llama-3's 12)
    select: int = 0
    gate_hidden: int = 256  # width of the gate's per-module encoding (``hidden_size``)
    #: the low-level update: ``malmen`` (the release's ``hieditmm``, RLEdit's rule) or ``mend``
    #: (its ``hiedit``: the sum of rank-1 pseudo-gradient products)
    rule: str = "malmen"
    #: what trains the gate: ``loss`` (the whole step loss, through the straight-through mask) or
    #: ``l2`` (only the L2 term, as the release's gradient does)
    gate_grad: str = "loss"
    #: candidate modules by path, as the release's model files list them; empty: ``layers`` and
    #: ``modules`` choose (a band of upper layers by default)
    module_names: tuple[str, ...] = ()

    ARCHITECTURE_FIELDS = RLEditConfig.ARCHITECTURE_FIELDS | {"module_names", "gate_hidden"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.select < 0:
            raise ValueError(f"select must be 0 (half the modules) or more, got {self.select}")
        if self.gate_hidden < 1:
            raise ValueError(f"gate_hidden must be at least 1, got {self.gate_hidden}")
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if self.gate_grad not in ("loss", "l2"):
            raise ValueError(f"gate_grad must be loss or l2, got {self.gate_grad!r}")


class GateEncoder(nn.Module):
    """One weight shape's encoder: ``scale_m * clamp(z W + b, min=0) + shift_m`` per row, with a
    scale and shift per module of that shape (release ``nets.py:113-139``)."""

    def __init__(self, size: int, hidden: int, n_modules: int, generator: torch.Generator) -> None:
        super().__init__()
        bound = 1 / math.sqrt(size)  # nn.Linear's initialisation, drawn from the seeded generator
        self.weight = nn.Parameter((torch.rand(size, hidden, generator=generator) * 2 - 1) * bound)
        self.bias = nn.Parameter((torch.rand(hidden, generator=generator) * 2 - 1) * bound)
        self.scale = nn.Parameter(torch.ones(n_modules, hidden))
        self.shift = nn.Parameter(torch.zeros(n_modules, hidden))

    def forward(self, rows: torch.Tensor, module: int) -> torch.Tensor:
        hidden = (rows @ self.weight + self.bias).clamp(min=0)
        return self.scale[module] * hidden + self.shift[module]


class LayerGate(nn.Module):
    """The high-level policy: one score per candidate module from the mean of each module's
    encoded rows, concatenated in module order (release ``nets.py:171-211``)."""

    def __init__(self, shapes: dict[str, int], counts: dict[str, int], n_modules: int,
                 hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({
            key: GateEncoder(size, hidden, counts[key], generator) for key, size in shapes.items()
        })
        bound = 1 / math.sqrt(hidden * n_modules)
        self.weight = nn.Parameter(
            (torch.rand(hidden * n_modules, n_modules, generator=generator) * 2 - 1) * bound
        )
        self.bias = nn.Parameter((torch.rand(n_modules, generator=generator) * 2 - 1) * bound)

    def forward(self, rows: list[torch.Tensor], slots: list[tuple[str, int]]) -> torch.Tensor:
        pooled = torch.cat([
            self.encoders[key](module_rows, index).mean(0)
            for module_rows, (key, index) in zip(rows, slots)
        ])
        return pooled @ self.weight + self.bias


def straight_through_top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """1 at the ``k`` highest scores and 0 elsewhere, with the gradient of the scores themselves
    (release ``nets.py:212-217``). The forward value is exactly 0 or 1 here; the release's
    ``(onehot - s).detach() + s`` can miss 1 by a rounding step."""
    hard = torch.zeros_like(scores).scatter(-1, scores.topk(k).indices, 1.0)
    return hard + (scores - scores.detach())


@dataclass
class GatedUpdate(LowRankUpdate):
    """A module's update times its mask. With ``gate_grad=l2`` the update carries the mask's value
    only, and the L2 term alone carries its gradient (the release's signal)."""

    l2_mask: torch.Tensor | None = None  # the mask with gradient, for the L2 term only

    def squared_norm(self) -> torch.Tensor:
        base = super().squared_norm()
        if self.l2_mask is None:
            return base
        # the release's L2 reaches the gate, not the low-level network (editor/hiedit.py:214-226)
        return self.l2_mask.pow(2) * base.detach()


@METHODS.register("hiedit")
class HiEdit(ChosenModules, RLEdit):
    name = "hiedit"
    description = (
        "RLEdit with a learned per-edit choice of which modules to change (Wang et al. 2026)"
    )
    Config = HiEditConfig
    config: HiEditConfig
    #: ``release``: the MALMEN-style ``hieditmm`` (``config/editor/hieditmm.yaml``: rank 1024, 4
    #: blocks, locality 0.6, L2 1e-4, ``token: ans``); ``release-mend``: the MEND-style ``hiedit``
    #: (``config/editor/hiedit.yaml``: rank 1920, 2 blocks, locality 1, L2 1e-2, ``token: all``);
    #: both with RELEASE_COMMON. ``untrained``: the gate and network at initialisation.
    presets = {
        **MODEL_PRESETS,
        "paper": {},
        "release": {**RELEASE_COMMON, "rule": "malmen", "rank": 1024, "n_blocks": 4,
                    "loc_coef": 0.6, "reg_coef": 1e-4, "tokens": "answer"},
        "release-mend": {**RELEASE_COMMON, "rule": "mend", "rank": 1920, "n_blocks": 2,
                         "loc_coef": 1.0, "reg_coef": 1e-2, "tokens": "all"},
        "untrained": {"max_steps": 0},
    }

    @classmethod
    def left_out_of_default_run(cls) -> str:
        """Why the default run leaves it out: no trained editor ships, so it would train on the
        pocket world first (30 steps, about 11 min on a loaded 2-core machine; docs/benchmarks.md,
        "HiEdit"), far over the ~10 s the default run's budget leaves a new row."""
        return ("hiedit (trains its networks first, minutes on the pocket model, over the default "
                "run's budget; run it with --methods hiedit)")

    def __init__(self, config: HiEditConfig, context: EditContext) -> None:
        super().__init__(config, context)
        self.n_select = config.select or -(-len(self.modules) // 2)
        if self.n_select > len(self.modules):
            raise ValueError(
                f"hiedit: select={config.select} but only {len(self.modules)} modules are edited "
                f"({', '.join(m.name for m in self.modules)}); choose at most that many"
            )
        generator = torch.Generator().manual_seed(context.seed + 1)  # apart from the blocks' A
        gate = LayerGate({key: sum(shape) for key, shape in self.shapes.items()},
                         self.shape_counts, len(self.modules), config.gate_hidden, generator)
        # held by the first shape's network, so that the trainer's optimiser, the saved editor and
        # the training state carry it with the networks (methods/hypernet stays as it is)
        self.nets[self.slots[self.modules[0].name][0]].add_module("gate", gate.to(context.device))
        self.last_selection: list[str] = []

    @property
    def gate(self) -> LayerGate:
        return self.nets[self.slots[self.modules[0].name][0]].gate

    def cost(self, shape: ModelShape, run: RunShape) -> MethodCost:
        """RLEdit's, plus the gate, which the networks' formulas (``hypernet/memory.py``) do not
        count: its float32 parameters while editing, with their gradient and Adam's moments while
        training (4.7M parameters per weight shape on Llama-3-8B)."""
        base = super().cost(shape, run)
        gate = sum(p.numel() for p in self.gate.parameters())
        # training holds each parameter's gradient and moments; its warm-up alone (max_steps=0)
        # only the value and the copy saved with the editor, as warm_up_peak counts the networks
        training = TRAINED_PARAMETER_BYTES if self.config.max_steps != 0 else 2 * FLOAT32
        return replace(base, phases=tuple(
            replace(phase, transient_bytes=phase.transient_bytes + gate * (
                training if phase.phase == "training" else FLOAT32))
            for phase in base.phases))

    def update(self, *args):  # the rule is a setting here, not a class attribute
        return RULES[self.config.rule](*args)

    def scores(self, observed: KeysAndGrads) -> torch.Tensor:
        """The gate's score of every candidate module, in ``self.modules`` order."""
        rows, slots = [], []
        for module in self.modules:
            key, index = self.slots[module.name]
            both = torch.cat((observed.keys[module.name], observed.grads[module.name]), -1)
            rows.append(self.nets[key].normaliser(both.to(self.ctx.device)))
            slots.append((key, index))
        return self.gate(rows, slots)

    def shifts(self, observed: KeysAndGrads) -> dict[str, LowRankUpdate]:
        """RLEdit's updates, each times its module's mask. With gradient (training) every module's
        update is computed, since an unselected module's score learns from what its update would
        have done; without (editing) only the selected modules' are, and the others are zero."""
        mask = straight_through_top_k(self.scores(observed), self.n_select)
        keep = mask.detach().tolist()
        self.last_selection = [m.name for m, kept in zip(self.modules, keep) if kept]
        training = torch.is_grad_enabled()
        out: dict[str, LowRankUpdate] = {}
        for i, module in enumerate(self.modules):
            if not (training or keep[i]):
                out[module.name] = LowRankUpdate(None, torch.zeros(module.shape,
                                                                   device=self.ctx.device))
                continue
            key, index = self.slots[module.name]
            net = self.nets[key]
            keys = observed.keys[module.name].to(self.ctx.device)
            pseudo_keys, pseudo_grads = net(
                keys, observed.grads[module.name].to(self.ctx.device), index
            )
            update = self.update(keys, pseudo_keys, pseudo_grads, net.lr[index],
                                 net.log_ridge[index])
            if self.config.gate_grad == "l2":
                out[module.name] = GatedUpdate(update.left, update.right * mask[i].detach(),
                                               mask[i])
            else:
                out[module.name] = GatedUpdate(update.left, update.right * mask[i])
        return out
