"""The editors built on keys and output gradients: an untrained core and the trained hypernetworks.

:class:`EditorCore` is everything such an editor does without a network: choose the edited
modules, read each one's keys and output gradients on the live model, keep one running normaliser
per weight shape, turn the rows into updates (``shifts``, the method's rule) and add them to the
weights; its lifelong state is the normalisers' statistics. UltraEdit is this core with a
closed-form rule. :class:`HypernetMethod` adds the trained editor network, one per weight shape,
and is :class:`~editbench.core.method.Trainable`: a subclass supplies ``update``, the rule that
turns one module's keys, pseudo-keys and pseudo-gradients into a (key_size, value_size) weight
update: MEND's sum of rank-1 products, MALMEN's least squares. Which modules, the hooks, the
network, training and saved editors are shared and live in this package.
"""

from __future__ import annotations

import hashlib
import json
import logging
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ...core.artifacts import coded, shipped
from ...core.cache import building
from ...core.costs import MethodCost, ModelShape, RunShape
from ...core.identity import component_code
from ...core.method import EditContext, EditMethod
from ...core.models import model_fingerprint
from ...core.records import EditRecord, dataset_hash
from ...core.tokenize import EncodedPair, PairBatch
from ..objectives import sub_batch_target_nll, summed_target_nll
from .config import EditorCoreConfig, HypernetConfig
from .cost import hypernet_cost
from .modules import EditedModule, KeysAndGrads, LowRankUpdate, keys_and_grads, select_modules
from .net import EditorNet, RunningNormaliser
from .storage import FORMAT_VERSION

log = logging.getLogger(__name__)


def _pairs(records: Sequence[EditRecord]) -> list[tuple[str, str]]:
    return [(r.prompt, r.target_new) for r in records]


def _shape_key(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


class EditorCore(EditMethod):
    """Keys, output gradients, per-shape normalisers and the application of updates; no training.

    A subclass supplies ``normalisers`` (where its statistics live) and ``shifts`` (its rule)."""

    Config = EditorCoreConfig

    def __init__(self, config: EditorCoreConfig, context: EditContext) -> None:
        super().__init__(config, context)
        self.modules = self.select_modules()
        # modules of one weight shape share a normaliser (and a network): (shape key, index there)
        self.slots: dict[str, tuple[str, int]] = {}
        counts: dict[str, int] = {}
        for module in self.modules:
            key = _shape_key(module.shape)
            self.slots[module.name] = (key, counts.get(key, 0))
            counts[key] = counts.get(key, 0) + 1
        self.shape_counts = counts
        self.shapes = {_shape_key(m.shape): m.shape for m in self.modules}

    def select_modules(self) -> list[EditedModule]:
        """The edited modules: ``layers`` and ``modules`` of the config."""
        return select_modules(
            self.ctx.model, self.ctx.layout, self.config.layers, self.config.modules
        )

    @abstractmethod
    def normalisers(self) -> dict[str, RunningNormaliser]:
        """The running normaliser of each weight shape (``slots``' keys)."""

    @abstractmethod
    def shifts(self, observed: KeysAndGrads) -> dict[str, torch.Tensor | LowRankUpdate]:
        """Each edited module's (key_size, value_size) update from the rows of one batch, dense or
        as the low-rank factors it is made of."""

    def normalises_at_edit(self) -> bool:
        """Whether the edits' own rows enter the statistics before their updates are computed."""
        return True

    def encode(self, pairs: Sequence[tuple[str, str]]) -> PairBatch:
        encoder = self.ctx.encoder
        return encoder.collate(encoder.encode_many(pairs)).to(self.ctx.device)

    def read_keys_and_grads(
        self, records: Sequence[EditRecord], whole_turn: bool = False
    ) -> KeysAndGrads:
        """Keys and output gradients of the edit prompts on the live model, where ``tokens`` says
        (the loss is the answer tokens' either way).

        By default the loss is each record's mean answer-token NLL summed over records, so a
        record's rows do not depend on how many records share its batch (a hypernetwork's
        normaliser is fitted at ``train_batch``, editing runs at ``--batch-size``; a batch mean
        would scale every row by 1/B). With ``sub_batch``, as the releases: the records sorted by
        length and cut into sub-batches of that many, each with its token-mean loss. The releases
        run one forward and backward pass per sub-batch; with ``whole_turn`` (editing) the
        sub-batches share one pass, its loss the sum of their token means, so every row gets the
        gradient its own pass would give (no row attends to another), one pass for the turn.
        That pass is taken only where the turn's read fits in ``READ_SHARE`` of the device's free
        memory (``memory.records_per_read``, which the plan's estimate follows); otherwise one
        sub-batch per pass, as the releases. Training keeps the releases' passes."""
        size = self.config.sub_batch
        if not size:
            return self._read(self.ctx.encoder.encode_many(_pairs(records)), summed_target_nll)
        encoded = self.ctx.encoder.encode_many(_pairs(records))  # once, for lengths and batches
        # stable: ties keep their order
        order = sorted(range(len(records)), key=lambda i: -len(encoded[i].ids))
        ordered = [encoded[i] for i in order]
        per_pass = size
        if whole_turn and len(ordered) > size and self._whole_turn_fits(ordered):
            per_pass = len(ordered)

        def loss(logits: torch.Tensor, batch: PairBatch) -> torch.Tensor:
            return sub_batch_target_nll(logits, batch, size)

        return KeysAndGrads.concat([
            self._read(ordered[s:s + per_pass], loss, size)
            for s in range(0, len(ordered), per_pass)
        ])

    def _whole_turn_fits(self, ordered: Sequence[EncodedPair]) -> bool:
        """Whether reading these (length-sorted) records in one pass fits the device now, by the
        read's memory formula (``memory.read_bytes``) at the turn's padded width."""
        from .memory import READ_SHARE, ModelShapes, free_bytes, read_bytes, records_per_read

        shapes = getattr(self, "_read_shapes", None)
        if shapes is None:  # the model's shapes, read once
            shapes = self._read_shapes = ModelShapes.of(
                self.ctx.model, self.config, modules=self.modules
            )
        answer = max(1, -(-sum(e.n_target for e in ordered) // len(ordered)))
        need = read_bytes(shapes, len(ordered), len(ordered[0].ids), answer)
        fits = need <= READ_SHARE * free_bytes(self.ctx.device)
        return records_per_read(self.config, len(ordered), fits) == len(ordered)

    def _read(self, encoded: Sequence[EncodedPair], loss, sub_batch: int = 0) -> KeysAndGrads:
        """One forward and backward pass; with ``sub_batch`` the rows are grouped by sub-batches of
        that many records (the release normaliser's merge units)."""
        batch = self.ctx.encoder.collate(encoded).to(self.ctx.device)
        mask = None
        if self.config.tokens == "all":  # every input position, the answer's last token excepted
            width = batch.input_ids.shape[1]
            mask = (
                torch.arange(width, device=batch.input_ids.device)
                < batch.attention_mask.sum(1, keepdim=True) - 1
            )
        return keys_and_grads(self.ctx.model, self.modules, batch, loss, mask, sub_batch)

    def update_normalisers(self, observed: KeysAndGrads) -> None:
        """Add the rows to each shape's normaliser: all of a batch's rows at once (``exact``), or,
        as the releases do, once per module and sub-batch (``release``; MALMEN
        ``editor/base.py:159``)."""
        for key, normaliser in self.normalisers().items():
            rows = [
                torch.cat((observed.keys[m.name], observed.grads[m.name]), -1).to(self.ctx.device)
                for m in self.modules
                if self.slots[m.name][0] == key
            ]
            if self.config.normaliser == "release":
                for module_rows in rows:
                    for group in module_rows.split(list(observed.groups or (len(module_rows),))):
                        normaliser.update(group)
            else:
                normaliser.update(torch.cat(rows))

    def apply_shifts(self, shifts: dict[str, torch.Tensor | LowRankUpdate]) -> None:
        """Write each update (made dense one module at a time) through the weights' master
        copies."""
        for module in self.modules:
            shift = shifts[module.name].detach()
            dense = shift.dense() if isinstance(shift, LowRankUpdate) else shift
            self.ctx.add_to_weight(module.name, dense.T)  # (in, out) -> (out, in)

    # -- the EditMethod protocol -------------------------------------------------------------------
    def apply(self, batch: Sequence[EditRecord]) -> None:
        observed = self.read_keys_and_grads(batch, whole_turn=True)
        if self.normalises_at_edit():
            self.update_normalisers(observed)
        with torch.no_grad():
            self.apply_shifts(self.shifts(observed))

    def edited_parameters(self) -> list[str]:
        return [m.parameter for m in self.modules]

    def cost(self, shape: ModelShape, run: RunShape) -> MethodCost:
        return hypernet_cost(self, shape, run)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The normalisers' statistics: lifelong state whenever edits update them."""
        return {
            f"{key}.{name}": buf.detach().clone()
            for key, normaliser in self.normalisers().items()
            for name, buf in normaliser.named_buffers()
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = self.state_dict()
        if set(state) != set(expected):
            raise ValueError(
                f"{self.name}: snapshot state has {sorted(state)}, expected {sorted(expected)}"
            )
        for key, normaliser in self.normalisers().items():
            for name, buf in normaliser.named_buffers():
                buf.copy_(state[f"{key}.{name}"])


class HypernetMethod(EditorCore):
    """The core plus one trained editor network per weight shape (MEND, MALMEN, RLEdit)."""

    Config = HypernetConfig

    def __init__(self, config: HypernetConfig, context: EditContext) -> None:
        super().__init__(config, context)
        # one network per weight shape; a module is (its shape's network, its index there)
        generator = torch.Generator().manual_seed(context.seed)  # the blocks' A is drawn at random
        shapes, counts = self.shapes, self.shape_counts
        self.nets = nn.ModuleDict({
            key: EditorNet(*shapes[key], config.rank, config.n_blocks, counts[key],
                           config.edit_lr if config.edit_lr is not None else 0.0, generator,
                           config.cap_rank, config.normaliser)
            for key in shapes
        }).to(context.device)

    # -- the update rule, which is what tells the methods apart ------------------------------------
    @staticmethod
    @abstractmethod
    def update(keys: torch.Tensor, pseudo_keys: torch.Tensor, pseudo_grads: torch.Tensor,
               lr: torch.Tensor, log_ridge: torch.Tensor) -> torch.Tensor:
        """The (key_size, value_size) update of one module from its rows (one per answer token)."""

    def normalisers(self) -> dict[str, RunningNormaliser]:
        return {key: net.normaliser for key, net in self.nets.items()}

    def normalises_at_edit(self) -> bool:
        return self.config.update_normaliser_at_edit

    def shifts(self, observed: KeysAndGrads) -> dict[str, LowRankUpdate]:
        """Each module's update; differentiable in the networks' parameters when grad is enabled."""
        out = {}
        for module in self.modules:
            key, index = self.slots[module.name]
            net = self.nets[key]
            keys = observed.keys[module.name].to(self.ctx.device)
            pseudo_keys, pseudo_grads = net(
                keys, observed.grads[module.name].to(self.ctx.device), index
            )
            out[module.name] = self.update(
                keys, pseudo_keys, pseudo_grads, net.lr[index], net.log_ridge[index]
            )
        return out

    # -- training, and loading a trained editor ----------------------------------------------------
    def requirements(self) -> list[str]:
        """Without a trained editor (``--editor``) the networks learn from the task's train
        split."""
        if self.ctx.trained_editor is not None:
            return []
        try:
            records = self.ctx.train_records()
        except (ValueError, KeyError, FileNotFoundError) as exc:
            return [
                f"{self.name} learns from the task's train split, which cannot be read ({exc}); "
                f"pass a trained editor (--editor {self.name}=DIR) or a task with a train split"
            ]
        if len(records) < 2:
            return [
                f"{self.name} learns from the task's train split, which holds {len(records)} "
                f"records; pass a trained editor (--editor {self.name}=DIR) or a task with a "
                "train split"
            ]
        return []

    def prepare(self) -> None:
        from .storage import is_complete, load_editor

        if self.ctx.trained_editor is not None:
            load_editor(self, Path(self.ctx.trained_editor))
            return
        entry, code = self.cache_entry()
        # the package's own build (core/artifacts.py), where the code that trains is the same
        packaged = shipped(entry, code=code)
        if packaged is not None:
            log.info("%s: using the shipped trained network %s", self.name, packaged)
            load_editor(self, packaged)
            return
        folder = Path(self.ctx.cache_dir) / coded(entry, code)
        if not is_complete(folder):
            # one process trains, others wait
            with building(folder, f"the trained {self.name} editor {folder}"):
                if not is_complete(folder):
                    log.info(
                        "%s: no trained network in the cache; training one in %s", self.name, folder
                    )
                    self.fit(folder, self.ctx.train_records())
        load_editor(self, folder)

    def fit(self, folder: Path, records: Sequence[EditRecord]) -> None:
        """Train the networks on ``records`` into ``folder`` (resumable), leaving the model as it
        was."""
        from .training import Trainer

        Trainer(self, list(records), folder).run()

    # -- identity of a trained network -------------------------------------------------------------
    @classmethod
    def training_code(cls) -> str:
        """The hash of the code training runs: this method's module and everything it imports
        (``core/identity.py``), so a fix there retrains and a fix elsewhere does not."""
        return component_code(cls.__module__)

    def training_identity(self, records: Sequence[EditRecord]) -> dict[str, object]:
        config: HypernetConfig = self.config  # type: ignore[assignment]
        return {"method": self.name, "format": FORMAT_VERSION, "config": config.training_fields(),
                "model": model_fingerprint(self.ctx.model),
                "train_data": dataset_hash(records), "seed": self.ctx.seed,
                # the prompts it trains on are shown in the run's format (none: raw, as before)
                **self.ctx.prompt_format.config(), "code": self.training_code()}

    def cache_entry(self) -> tuple[str, str]:
        """(``hypernets/NAME-DIGEST``, code hash): the digest of everything but the code names a
        shipped editor; the cache's own build is kept apart per code (``coded``)."""
        identity = self.training_identity(self.ctx.train_records())
        code = str(identity.pop("code"))
        digest = hashlib.sha256(
            json.dumps(identity, sort_keys=True, default=str).encode()
        ).hexdigest()[:16]
        return f"hypernets/{self.name}-{digest}", code

    def cache_folder(self) -> Path:
        """Where this editor is trained and cached when the package ships none."""
        entry, code = self.cache_entry()
        return Path(self.ctx.cache_dir) / coded(entry, code)
