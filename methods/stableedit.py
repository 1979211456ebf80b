"""StableEdit: lifelong normalisation with a warm-up and full whitening (ICML 2026, "More Edits,
More Stable: Understanding the Lifelong Normalization in Sequential Model Editing", MINE-USTC).

The paper's finding is that the lifelong editors that survive long horizons (RLEdit, UltraEdit)
share one mechanism, *lifelong normalisation*: the rows ``[k || g]`` (a module's input and output
gradient at the answer tokens) are normalised by running statistics that are never reset. With a
ridge solve on top, it proves the updates have bounded norms and become asymptotically
orthogonal. StableEdit strengthens that loop in two ways and trains nothing (release
MINE-USTC/StableEdit 6ea8eae, ``editor/stableedit.py``, ``nets.py:10-113``):

- **Full whitening** of the output gradients: the gradient part of the statistics is a full
  covariance (the paper's Normal-Inverse-Wishart recursion with kappa_0 = 0, which is Chan's merge
  of a scatter matrix), ``Sigma = Psi / (n - d - 1)``, and each gradient is mapped to
  ``Sigma^-1/2 (g - mean)`` (eigenvalues floored at 1e-6) where UltraEdit divides each coordinate
  by its standard deviation. Keys stay standardised per coordinate. Until the statistics hold more
  than ``d + 1`` rows the release falls back to the per-coordinate map.
- **An explicit warm-up**: before the first edit the task's train split is edited turn by turn
  through the same rule, so the statistics (and the model) have met many rows before the stream
  under test starts (the paper's Algorithm 1, ``editor/base.py:302-307`` in the release). It
  runs inside the first ``apply``; the snapshot records that it has run.

Each turn is then UltraEdit's closed form with the whitened rows (``editor/stableedit.py:91-115``):

    v_i = -lr * ||k^_i||^2 * g~_i,      delta W = (K^T K + ridge I)^-1 K^T V   (raw keys K)

so this file is UltraEdit plus a normaliser and a ``prepare``. docs/hypernetworks.md
("StableEdit") lists what follows the paper, the release and editbench, with lines.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from ..core.costs import MethodCost, ModelShape, RunShape
from ..core.method import METHODS, EditContext
from .hypernet.net import RunningNormaliser
from .ultraedit import UltraEdit, UltraEditConfig


@dataclass(frozen=True)
class StableEditConfig(UltraEditConfig):
    #: the step of the pseudo value changes; the release's 1e-6
    #: (``config/editor/stableedit.yaml:2``) is sized for 4096-wide and wider keys and edits
    #: nothing on the pocket model (docs/hypernetworks.md)
    lr: float = 1e-3
    #: the solve's ridge in raw-key units (release ``alpha``: 1.0 in ``stableedit.yaml:8``, 10 on
    #: every line of ``run.sh``)
    ridge: float = 1.0
    #: full whitening of the output gradients (False: UltraEdit's per-coordinate map, an ablation)
    whiten: bool = True
    #: the eigenvalue floor of the whitening: 1e-6 as the release (``nets.py:99``), times the mean
    #: eigenvalue (``relative_floor``) or in the gradients' own units (the release). Output
    #: gradients are small (their variances are 1e-9 to 1e-8 on the micro model), so the release's
    #: absolute floor lifts every eigenvalue there and its "whitening" is a fixed scale of 1e3
    eig_floor: float = 1e-6
    relative_floor: bool = True
    #: train records edited before the first edit, in order (0: no warm-up); the release's 20 turns
    #: of 100 (``config/config.yaml:7``, ``num_seq_zsre``); capped at the train split
    warm_up_records: int = 2000
    #: records per warm-up turn (the release: its turn, ``dataset.n_edits`` = 100); a remainder
    #: smaller than a turn is left out, as the release's ``drop_last`` loader does
    warm_up_batch: int = 10
    #: the warm-up's updates are written to the model (paper Algorithm 1 and release
    #: ``editor/base.py:307``); False: they only feed the statistics (an ablation)
    warm_up_edits: bool = True
    #: whiten during the warm-up as well (paper Algorithm 1: one rule for both phases); the
    #: release's warm-up normalises per coordinate (``mode='train'``, ``nets.py:88-89``)
    warm_up_whitening: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.eig_floor > 0:
            raise ValueError(f"eig_floor must be positive, got {self.eig_floor}")
        if self.warm_up_records < 0:
            raise ValueError(f"warm_up_records must be 0 or more, got {self.warm_up_records}")
        if self.warm_up_batch < 1:
            raise ValueError(f"warm_up_batch must be at least 1, got {self.warm_up_batch}")


class WhiteningNormaliser(RunningNormaliser):
    """The running per-coordinate statistics of ``[k || g]`` (exact merge, as the release's
    ``nets.py:45``) and, for the gradient part, the scatter matrix ``Psi`` of every row seen
    (``nets.py:53``; float64 here). ``forward`` standardises keys per coordinate and whitens
    gradients with ``Sigma^-1/2`` once ``count > d + 1``; ``whitening`` False (the release's
    warm-up) or too few rows give the per-coordinate map of UltraEdit."""

    def __init__(self, key_size: int, value_size: int, eig_floor: float,
                 mode: str = "exact", relative_floor: bool = True) -> None:
        super().__init__(key_size + value_size, mode)
        self.key_size, self.value_size, self.eig_floor = key_size, value_size, eig_floor
        self.relative_floor = relative_floor
        self.register_buffer("scatter", torch.zeros(value_size, value_size, dtype=torch.float64))
        self.whitening = True
        self._whitener: tuple[tuple, torch.Tensor] | None = None  # (statistics' version, matrix)

    @torch.no_grad()
    def update(self, rows: torch.Tensor) -> None:
        if rows.shape[0] == 0:
            return
        grads = rows[:, self.key_size:].to(torch.float64)
        n_a, n_b = float(self.count), grads.shape[0]
        mean_b = grads.mean(0)
        centred = grads - mean_b
        delta = mean_b - self.mean[self.key_size:]
        # the NIW posterior's Psi with kappa_0 = 0: S_b + n_a n_b / n * delta delta^T
        self.scatter += centred.T @ centred + torch.outer(delta, delta) * (n_a * n_b / (n_a + n_b))
        super().update(rows)

    def whitener(self) -> torch.Tensor | None:
        """``Sigma^-1/2`` with ``Sigma = Psi / (n - d - 1)`` (paper Corollary 3.3, release
        ``nets.py:95-99``), eigenvalues floored (relative to their mean: the map then does not
        depend on the gradients' scale, as a normalisation should not); None while
        ``count <= d + 1``. Computed once per state of the statistics (one eigendecomposition a
        turn, not one per module)."""
        if float(self.count) <= self.value_size + 1:
            return None
        version = (float(self.count), self.scatter._version)
        if self._whitener is None or self._whitener[0] != version:
            sigma = self.scatter / (float(self.count) - self.value_size - 1)
            values, vectors = torch.linalg.eigh(sigma)
            floor = self.eig_floor
            if self.relative_floor:
                floor *= max(float(values.mean()), torch.finfo(torch.float64).tiny)
            matrix = (vectors * values.clamp_min(floor).rsqrt()) @ vectors.T
            self._whitener = (version, matrix)
        return self._whitener[1]

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        standardised = super().forward(rows)
        whitener = self.whitener() if self.whitening else None
        if whitener is None:
            return standardised
        centred = rows[:, self.key_size:].double() - self.mean[self.key_size:]
        grads = (centred @ whitener).to(rows.dtype)
        return torch.cat((standardised[:, :self.key_size], grads), -1)


def _layers(prefix: str, layers, suffix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{layer}.{suffix}" for layer in layers)


#: The release's edited modules per model (6ea8eae): ``config/model/*.yaml`` (``edit_modules``,
#: the ZsRE/UltraEditBench list; the FEVER and WikiBigEdit lists are commented out there). Every
#: ``run.sh`` line overrides them with ``down_proj``/``fc_out`` lists: those are the ``-run``
#: presets (``RUN_MODULES``).
CONFIG_MODULES: dict[str, tuple[str, ...]] = {
    # llama-3-instruct.yaml:7-18: gate 11-15, up 18-24
    "llama-3-8b": _layers("model.layers", range(11, 16), "mlp.gate_proj")
    + _layers("model.layers", range(18, 25), "mlp.up_proj"),
    # mistral-7b.yaml:7-9: down 28-30
    "mistral-7b": _layers("model.layers", range(28, 31), "mlp.down_proj"),
    # gpt-j.yaml:7-15: fc_out 18-26
    "gpt-j-6b": _layers("transformer.h", range(18, 27), "mlp.fc_out"),
    # qwen2.5-7b.yaml:8-25: gate 18-26, then up 18-26
    "qwen2.5-7b": _layers("model.layers", range(18, 27), "mlp.gate_proj")
    + _layers("model.layers", range(18, 27), "mlp.up_proj"),
}
#: ``run.sh``'s ZsRE lines: llama 15-25, mistral 95-106 (the one line not commented out), gpt-j
#: 179-189, qwen 260-270.
RUN_MODULES: dict[str, tuple[str, ...]] = {
    "llama-3-8b": _layers("model.layers", (11, 12, 22, 23, 28, 29, 30), "mlp.down_proj"),
    "mistral-7b": _layers("model.layers", range(28, 32), "mlp.down_proj"),
    "gpt-j-6b": _layers("transformer.h", [*range(7, 16), *range(18, 26)], "mlp.fc_out"),
    "qwen2.5-7b": _layers("model.layers", [*range(8, 15), *range(18, 26)], "mlp.down_proj"),
}
#: ``run.sh``'s step per model (``editor.lr``: 1e-6 for Llama and Mistral, 2e-6 for GPT-J and
#: Qwen on ZsRE); its ridge is 10 on every line (``editor.alpha=10``).
RUN_LR = {"llama-3-8b": 1e-6, "mistral-7b": 1e-6, "gpt-j-6b": 2e-6, "qwen2.5-7b": 2e-6}
#: The release beyond the modules: its step and ridge as run, turns of 100 in sub-batches of 10
#: (``config/dataset/zsre.yaml:2-3``), a warm-up of 20 such turns on the train file's first
#: records, normalised per coordinate (``config/config.yaml:7``, ``editor/base.py:302-307``).
RELEASE_SETTINGS: dict[str, object] = {
    "lr": 1e-6, "ridge": 10.0, "sub_batch": 10, "warm_up_records": 2000, "warm_up_batch": 100,
    "warm_up_whitening": False, "relative_floor": False,
}


WARMED_UP = "warm_up.done"  # the state_dict key that says the warm-up has run


@METHODS.register("stableedit")
class StableEdit(UltraEdit):
    name = "stableedit"
    description = (
        "training-free closed-form edits under lifelong normalisation with a warm-up and full "
        "whitening of the gradients (ICML 2026)"
    )
    Config = StableEditConfig
    config: StableEditConfig
    #: A published model's preset: ``config/model/*.yaml``'s modules with ``run.sh``'s lr and
    #: ridge; ``MODEL-run``: ``run.sh``'s own module list. ``release``: the release's settings on
    #: any model. ``paper``: the defaults.
    presets = {
        **{name: {"module_names": modules, "lr": RUN_LR[name], "ridge": 10.0}
           for name, modules in CONFIG_MODULES.items()},
        **{f"{name}-run": {"module_names": modules, "lr": RUN_LR[name], "ridge": 10.0}
           for name, modules in RUN_MODULES.items()},
        "paper": {},
        "release": RELEASE_SETTINGS,
    }
    preset_checkpoints = {
        "llama-3-8b": "Meta-Llama-3-8B-Instruct (config/model/llama-3-instruct.yaml)",
        "mistral-7b": "Mistral-7B-v0.3 (config/model/mistral-7b.yaml)",
        "gpt-j-6b": "gpt-j-6b (config/model/gpt-j.yaml)",
        "qwen2.5-7b": "Qwen2.5-7B-Instruct (config/model/qwen2.5-7b.yaml)",
    }

    def __init__(self, config: StableEditConfig, context: EditContext) -> None:
        super().__init__(config, context)
        self.lifelong = nn.ModuleDict({
            key: WhiteningNormaliser(key_size, value_size, config.eig_floor, config.normaliser,
                                     config.relative_floor)
            for key, (key_size, value_size) in self.shapes.items()
        }).to(context.device)
        self._set_whitening(config.whiten)
        self.warmed_up = False

    def _set_whitening(self, on: bool) -> None:
        for normaliser in self.lifelong.values():
            normaliser.whitening = on

    def requirements(self) -> list[str]:
        if not self.config.warm_up_records:
            return []
        try:
            n = len(self.ctx.train_records())
        except (ValueError, KeyError, FileNotFoundError) as exc:
            n, why = 0, f"cannot be read ({exc})"
        else:
            why = f"holds {n} records"
        if n < 1:
            return [f"{self.name} warms up on the task's train split, which {why}; use a task with "
                    f"a train split or --param {self.name}.warm_up_records=0"]
        return []

    def warm_up_turns(self) -> list[list]:
        """The warm-up's turns: the first ``warm_up_records`` train records in their order, in
        turns of ``warm_up_batch``; a smaller remainder is left out unless it is all there is."""
        config = self.config
        records = list(self.ctx.train_records())[:config.warm_up_records] \
            if config.warm_up_records else []
        size = config.warm_up_batch
        stop = len(records) - len(records) % size if len(records) >= size else len(records)
        return [records[s:s + size] for s in range(0, stop, size)]

    def warm_up(self) -> None:
        """The warm-up stage: each turn reads its rows on the live model, adds them to the
        statistics and (``warm_up_edits``) writes its update, as an edit does. It is the stream's
        first turns (the paper's Algorithm 1 counts both phases with one step index), so it runs
        in the first ``apply``, not in ``prepare`` (which leaves the model as loaded), and the
        snapshot says it is done: a resumed run does not repeat it."""
        config = self.config
        self._set_whitening(config.whiten and config.warm_up_whitening)
        try:
            for turn in self.warm_up_turns():
                if config.warm_up_edits:
                    super().apply(turn)
                else:
                    self.update_normalisers(self.read_keys_and_grads(turn, whole_turn=True))
        finally:
            self._set_whitening(config.whiten)
        self.warmed_up = True

    def apply(self, batch) -> None:
        if not self.warmed_up:
            self.warm_up()
        super().apply(batch)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The statistics (the scatter included) and whether the warm-up has run."""
        return {**super().state_dict(), WARMED_UP: torch.tensor(self.warmed_up)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.warmed_up = bool(state[WARMED_UP])

    def cost(self, shape: ModelShape, run: RunShape) -> MethodCost:
        """UltraEdit's, plus per weight shape the scatter and the whitener kept between turns
        (float64, resident) and, while the whitener is computed, the covariance and its
        eigenvectors: after the turn's read is freed, so a phase's peak is the larger of the two
        (within 12% of the measured peak on the Llama micro model of the cost check). The
        warm-up's records are edited too, so they add to the editing work."""
        base = super().cost(shape, run)
        sizes = [v for _, v in self.shapes.values()]
        resident = sum(2 * 8 * v * v for v in sizes)
        workspace = 2 * 8 * max(v * v for v in sizes)
        warm_up = self.config.warm_up_records
        if run.train_records:
            warm_up = min(warm_up, run.train_records)
        scale = (run.edits + warm_up) / max(run.edits, 1)
        phases = tuple(replace(p, transient_bytes=max(p.transient_bytes, workspace),
                               flops=p.flops * scale if p.phase == "editing" else p.flops)
                       for p in base.phases)
        return replace(base, resident_bytes=base.resident_bytes + resident, phases=phases)
