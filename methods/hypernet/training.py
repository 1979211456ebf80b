"""One trainer for MEND, MALMEN and RLEdit: sequences of edit batches applied to a live model.

Each optimiser step walks one *sequence* of ``sequence_length`` edit batches (0: a whole pass over
the train split; never more than one pass, as RLEdit's release). At step t of a sequence the
trainer caches the batch's keys and gradients on the live model, updates the normalisers (as the
releases do), asks the networks for the update, applies it, and scores the step (``step_loss``).
Meta-gradients accumulate over the sequence and the optimiser steps once at its end; the model is
then reset to its unedited weights (and their master copies, ``core/precision.py``).
MEND and MALMEN are the case ``sequence_length=1, depth=1``: one batch on the unedited model per
step, the schedule of their releases. Validation walks the held-out share of the train split the
same way without gradients; training stops at ``max_steps`` or when ``patience`` validations in a
row bring no improvement, and the best network by validation loss is kept.

Memory (docs/hypernetworks.md, "Memory"; estimates in ``memory.py``): the warm-up streams the
train split batch by batch, the back-tracking window keeps each update as low-rank factors, and
the step loss is back-propagated one window batch at a time.

Everything random is drawn from seeds named by (seed, phase, step), so a run resumed from a
saved training state takes the same steps as one never interrupted.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ...core.method import LARGE_MODEL_PARAMETERS
from ...core.progress import progress
from ...core.records import EditRecord
from ...core.tokenize import PairBatch
from ..objectives import masked_target_nll, sub_batch_target_nll, sub_batch_token_means
from . import storage
from .modules import LowRankUpdate, routed_updates

log = logging.getLogger(__name__)

IMPROVEMENT = 1e-3  # a validation loss must fall by this share of the best to count as better


@dataclass
class Step:
    """One edit batch as it sits in the back-tracking window: its pairs and, per module, its update
    as low-rank factors (rows x (key_size + value_size), never a dense key_size x value_size)."""

    gen_pairs: list[tuple[str, str]]  # (paraphrase, new target)
    loc_pairs: list[tuple[str, str]]  # (unrelated prompt, its answer)
    shifts: dict[str, LowRankUpdate]


def _segments(sizes: list[int]) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    return bounds


def masked_kl(
    reference_logits: torch.Tensor, logits: torch.Tensor, batch: PairBatch, sub_batch: int = 0
) -> torch.Tensor:
    """KL(p_reference || p) at the answer positions (the releases' locality loss: ``kl_div`` with
    ``batchmean`` over answer positions): averaged over all positions, or with ``sub_batch`` the
    releases' sum over length-sorted sub-batches of each one's average."""
    mask = batch.target_mask
    ref = torch.log_softmax(reference_logits[mask].float(), -1)
    new = torch.log_softmax(logits[mask].float(), -1)
    per_position = (ref.exp() * (ref - new)).sum(-1)
    if not sub_batch:
        return per_position.mean()
    values = per_position.new_zeros(mask.shape)
    values[mask] = per_position
    return sub_batch_token_means(
        values, mask.to(values.dtype), batch.attention_mask.sum(1), sub_batch
    )


class Trainer:
    def __init__(self, method, records: list[EditRecord], folder: Path) -> None:
        config = method.config
        if len(records) < 2:
            raise ValueError(
                f"{method.name} needs at least 2 train records to train (a train and a "
                f"validation share), got {len(records)}; does the task have a train split?"
            )
        # the records as given identify the training; the cap picks from them
        self.method, self.config, self.folder, self.records = method, config, Path(folder), records
        self.model = method.ctx.model
        self.seed = method.ctx.seed
        n_parameters = sum(p.numel() for p in self.model.parameters())
        #: back-propagate each window batch's loss term as soon as it is computed (memory bounded by
        #: one batch; docs/hypernetworks.md "Memory") on large models; on small ones, where every
        #: extra backward pass through the window's retained network graphs costs time and memory
        #: does not matter, the step's whole loss at once. The gradients are the same.
        self.backward_by_batch = n_parameters >= LARGE_MODEL_PARAMETERS
        cap, why = config.train_record_cap(n_parameters)
        if cap and len(records) > cap:
            keep = random.Random(f"{self.seed}-sample").sample(range(len(records)), cap)
            log.info(
                "%s: training on %d of the %d train records (%s)",
                method.name,
                cap,
                len(records),
                why,
            )
            records = [records[i] for i in sorted(keep)]
        order = list(range(len(records)))
        random.Random(f"{self.seed}-split").shuffle(order)
        n_val = min(
            len(records) - 1,
            config.max_val_records,
            max(1, round(config.val_fraction * len(records))),
        )
        if n_val >= config.train_batch:  # whole batches only, so no odd small batch skews the loss
            n_val = round(n_val / config.train_batch) * config.train_batch
        self.val = [records[i] for i in sorted(order[:n_val])]
        self.train = [records[i] for i in sorted(order[n_val:])]
        self.pristine = {m.parameter: self.model.get_parameter(m.parameter).detach().clone()
                         for m in method.modules}
        #: the float32 master copies as they were (none on a freshly loaded model): on a bf16 or
        #: fp16 model the sequence's updates go through them (``apply_shifts``), so a reset that
        #: left them would carry training's updates into the next sequence and into the first
        #: real edit
        self.pristine_masters = {k: v.clone() for k, v in method.ctx.masters.state_dict().items()}

    # -- data --------------------------------------------------------------------------------------
    def _batches(
        self, records: list[EditRecord], shuffle_key: str | None
    ) -> list[list[EditRecord]]:
        """Batches of ``train_batch`` edits; a smaller remainder is left out (a shuffled epoch
        leaves out different records each time) unless there would be no batch at all."""
        order = list(range(len(records)))
        if shuffle_key is not None:
            random.Random(shuffle_key).shuffle(order)
        size = self.config.train_batch
        stop = len(order) - len(order) % size if len(order) >= size else len(order)
        return [[records[i] for i in order[s:s + size]] for s in range(0, stop, size)]

    def _sequence_length(self) -> int:
        """Batches per optimiser step: ``sequence_length``, never more than one pass over the train
        split (0: exactly one pass). RLEdit's release walks ``islice(loader, num_seq)`` over a
        ``drop_last`` loader (``editor/rledit.py:106-111``, ``data/base.py:95-101``), which stops
        at the loader's end: with 160 train records in batches of 20 its 400-batch sequence is 8
        batches long, each record edited once."""
        per_epoch = len(self._batches(self.train, None))
        chosen = self.config.sequence_length
        return min(chosen, per_epoch) if chosen else per_epoch

    def _sequence(self, step: int) -> list[list[EditRecord]]:
        """The batches of optimiser step ``step``: a stream of epochs, each a seeded shuffle (a
        sequence as long as an epoch is that epoch)."""
        per_epoch = len(self._batches(self.train, None))
        length = self._sequence_length()
        out = []
        for index in range(step * length, (step + 1) * length):
            epoch, position = divmod(index, per_epoch)
            out.append(self._batches(self.train, f"{self.seed}-epoch-{epoch}")[position])
        return out

    def _step_data(self, records: list[EditRecord], rng: random.Random | None) -> Step:
        """The pairs that score a batch: sampled paraphrases and neighbours in training, every one
        of them (``rng=None``) in validation, whose loss must not depend on the draw."""
        config = self.config

        def pick(items: list, k: int) -> list:
            return items if rng is None else rng.sample(items, min(k, len(items)))

        gen, loc = [], []
        for r in records:
            gen += [
                (p, r.target_new)
                for p in pick(list(r.paraphrases) or [r.prompt], config.paraphrases_per_edit)
            ]
            loc += [
                (n.prompt, n.answer) for n in pick(list(r.neighbours), config.neighbours_per_edit)
            ]
        return Step(gen, loc, {})

    # -- the loss of one step ----------------------------------------------------------------------
    def _logits(
        self, pairs: list[tuple[str, str]], shifts_per_module: dict[str, list[LowRankUpdate]]
    ):
        """The live model's logits on ``pairs``, carrying gradient into the given updates."""
        batch = self.method.encode(pairs)
        return self._forward(batch, shifts_per_module), batch

    def _forward(
        self, batch: PairBatch, shifts_per_module: dict[str, list[LowRankUpdate]]
    ) -> torch.Tensor:
        with routed_updates(self.model, self.method.modules, shifts_per_module):
            return self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits

    def _nll(self, logits: torch.Tensor, batch: PairBatch) -> torch.Tensor:
        """One batch's paraphrase loss: the mean over records of each record's token mean, or the
        releases' sum over length-sorted sub-batches of each one's token mean (``sub_batch``)."""
        if self.config.sub_batch:
            return sub_batch_target_nll(logits, batch, self.config.sub_batch)
        return masked_target_nll(logits, batch)

    def step_loss(self, window: Sequence[Step], reference: torch.Tensor | None,
                  backward: bool = False) -> tuple[torch.Tensor, dict]:
        """RLEdit's step loss (methods/rledit.py); with ``depth=1`` MEND's and MALMEN's.

        ``window[-1]`` is this step (its update already in the live weights), ``window[-1-k]`` the
        batch k steps back. The paraphrase losses see every update in the window with gradient;
        the locality KL, against ``reference`` (the logits before this step), only this step's.

        The loss is a sum of one term per window batch and kind, each from its own forward pass
        over that batch's rows (padded as the whole window, so ``reference`` lines up). With
        ``backward`` every term is back-propagated as soon as it is computed and the loss comes
        back detached: the gradients are the whole loss's, but only one batch's activations and
        logits are alive at a time, not the window's (docs/hypernetworks.md, "Memory").
        """
        config = self.config
        recent = list(reversed(window))
        decay = [config.decay ** k for k in range(len(recent))]
        reach = recent if config.backtrack_grad else recent[:1]
        every = {m.name: [s.shifts[m.name] for s in reach] for m in self.method.modules}
        sums: dict[str, torch.Tensor] = {}

        def add(name: str, term: torch.Tensor, weight: float) -> None:
            if backward and term.requires_grad:
                # the window's updates serve later terms
                (weight * term).backward(retain_graph=True)
                term = term.detach()
            sums[name] = sums[name] + term if name in sums else term

        gen_batch = self.method.encode([p for s in recent for p in s.gen_pairs])
        for d, (a, b) in zip(decay, _segments([len(s.gen_pairs) for s in recent])):
            rows = gen_batch.rows(a, b)
            add("gen", d * self._nll(self._forward(rows, every), rows), 1.0)
        if reference is not None:
            current = {m.name: [recent[0].shifts[m.name]] for m in self.method.modules}
            loc_batch = self.method.encode([p for s in recent for p in s.loc_pairs])
            for d, (a, b) in zip(decay, _segments([len(s.loc_pairs) for s in recent])):
                if b > a:
                    rows = loc_batch.rows(a, b)
                    add(
                        "loc",
                        d * masked_kl(
                            reference[a:b], self._forward(rows, current), rows, config.sub_batch
                        ),
                        config.loc_coef,
                    )
        l2 = sum(s.squared_norm() for s in recent[0].shifts.values())
        add("l2", l2 if config.reg_grad else l2.detach(), config.reg_coef)
        gen, l2 = sums["gen"], sums["l2"]
        loc = sums.get("loc", torch.zeros((), device=gen.device))
        loss = gen + config.loc_coef * loc + config.reg_coef * l2
        return loss, {
            "gen": float(gen.detach()),
            "loc": float(loc.detach()),
            "l2": float(l2.detach()),
        }

    # -- walking a sequence ------------------------------------------------------------------------
    def walk(
        self, sequence: list[list[EditRecord]], train: bool, key: str = ""
    ) -> dict[str, float]:
        """Apply the sequence's batches one after another; return mean step losses. With ``train``,
        back-propagate every step's loss into the networks (gradients accumulate)."""
        method, config = self.method, self.config
        window: deque[Step] = deque(maxlen=config.depth)
        totals: dict[str, float] = {}
        try:
            for t, records in enumerate(sequence):
                observed = method.read_keys_and_grads(records)
                if train:
                    method.update_normalisers(observed)
                step = self._step_data(records, random.Random(f"{key}-{t}") if train else None)
                window.append(step)
                loc_pairs = [p for s in reversed(window) for p in s.loc_pairs]
                reference = None
                if loc_pairs:
                    with torch.no_grad():
                        reference, _ = self._logits(loc_pairs, {m.name: [] for m in method.modules})
                with torch.set_grad_enabled(train):
                    step.shifts = method.shifts(observed)
                    method.apply_shifts(step.shifts)
                    by_batch = train and self.backward_by_batch
                    loss, parts = self.step_loss(window, reference, backward=by_batch)
                    if train and not by_batch:
                        loss.backward(retain_graph=True)  # the window's updates serve later steps
                if train:
                    # the RLEdit release clips the accumulated gradient at every step
                    if config.clip_every_step:
                        torch.nn.utils.clip_grad_norm_(self._trainable(), config.max_grad_norm)
                for name, value in {"loss": float(loss.detach()), **parts}.items():
                    totals[name] = totals.get(name, 0.0) + value / len(sequence)
                del loss, reference  # before the next step's forward, not after it
        finally:
            self._reset()
        return totals

    def _reset(self) -> None:
        with torch.no_grad():
            for name, weight in self.pristine.items():
                self.model.get_parameter(name).copy_(weight)
        self.method.ctx.masters.load_state_dict(self.pristine_masters)

    def validate(self) -> dict[str, float]:
        batches = self._batches(self.val, None)
        length = self.config.sequence_length or len(batches)
        sums: dict[str, float] = {}
        sequences = [batches[s:s + length] for s in range(0, len(batches), length)]
        for sequence in sequences:
            for name, value in self.walk(sequence, train=False).items():
                sums[name] = sums.get(name, 0.0) + value * len(sequence) / len(batches)
        return sums

    # -- starting: normaliser statistics and the edit lr ------------------------------------------
    def _warm_up(self) -> dict[str, float]:
        """Fill the normalisers from the unedited model on the train split, then set each module's
        initial edit lr: ``edit_scale * rms(module output) / mean(<k, pseudo_k>)`` at answer tokens,
        so that an untrained editor moves each edited output by about ``edit_scale`` times its
        typical size (docs/hypernetworks.md, "Scaling the edit lr")."""
        method, config = self.method, self.config
        if not config.warm_up:  # the releases: statistics come from the training steps alone
            for net in method.nets.values():
                net.lr.data.fill_(config.edit_lr)
            return {m.name: config.edit_lr for m in method.modules}
        batches = self._batches(self.train, None)
        for records in batches:  # streamed: one batch's keys and gradients are held at a time
            method.update_normalisers(method.read_keys_and_grads(records))
        chosen = {m.name: config.edit_lr for m in method.modules}
        if config.edit_lr is not None:  # the networks were built with it
            return chosen
        # the rule needs the filled normaliser, so a second pass reads the batches again; it keeps
        # float64 sums of the squared outputs and of <k, pseudo_k> per module, not the rows
        squares = dict.fromkeys(chosen, 0.0)
        alignment = dict.fromkeys(chosen, 0.0)
        outputs_seen = dict.fromkeys(chosen, 0)
        rows_seen = dict.fromkeys(chosen, 0)
        for records in batches:
            observed = method.read_keys_and_grads(records)
            with torch.no_grad():
                for m in method.modules:
                    key, index = method.slots[m.name]
                    keys = observed.keys[m.name].to(method.ctx.device)
                    pseudo_keys, _ = method.nets[key](
                        keys, observed.grads[m.name].to(method.ctx.device), index
                    )
                    weight = self.pristine[m.parameter].float()
                    outputs = keys @ (weight if m.conv1d else weight.T)
                    squares[m.name] += float(outputs.double().pow(2).sum())
                    alignment[m.name] += float((keys * pseudo_keys).sum(-1).double().sum())
                    outputs_seen[m.name] += outputs.numel()
                    rows_seen[m.name] += keys.shape[0]
            del observed
        for m in method.modules:
            key, index = method.slots[m.name]
            rms = (squares[m.name] / max(outputs_seen[m.name], 1)) ** 0.5
            mean_alignment = max(alignment[m.name] / max(rows_seen[m.name], 1), 1e-12)
            chosen[m.name] = config.edit_scale * rms / mean_alignment
            method.nets[key].lr.data[index] = chosen[m.name]
        return chosen

    def _trainable(self) -> list[torch.nn.Parameter]:
        nets = self.method.nets.values()
        if self.config.trainable == "lr":
            return [net.lr for net in nets]
        return [p for net in nets for p in net.parameters()]

    def _optimizer(self, lr_meta_lr: float) -> torch.optim.Optimizer:
        nets = self.method.nets
        groups = [{"params": [net.lr for net in nets.values()], "lr": lr_meta_lr}]
        if self.config.trainable == "all":
            rest = [p for net in nets.values() for n, p in net.named_parameters() if n != "lr"]
            groups.insert(0, {"params": rest, "lr": self.config.meta_lr})
        return torch.optim.Adam(groups)

    @property
    def max_steps(self) -> int | None:
        """``max_steps``, or fewer when ``max_epochs`` caps the passes over the train split; None:
        no cap (training then ends when validation stops improving)."""
        config = self.config
        if not config.max_epochs:
            return config.max_steps
        per_epoch = len(self._batches(self.train, None))
        per_step = self._sequence_length()
        by_epochs = -(-config.max_epochs * per_epoch // per_step)
        return by_epochs if config.max_steps is None else min(config.max_steps, by_epochs)

    def _below_cap(self, step: int) -> bool:
        return self.max_steps is None or step < self.max_steps

    # -- the run -----------------------------------------------------------------------------------
    def run(self) -> None:
        method, config, folder = self.method, self.config, self.folder
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".state-*"):
            shutil.rmtree(stale, ignore_errors=True)
        # as stored
        identity = json.loads(json.dumps(method.training_identity(self.records), default=str))
        saved = (
            storage.read_json(folder / storage.CONFIG_FILE)
            if (folder / storage.CONFIG_FILE).is_file()
            else None
        )
        if saved is not None and saved.get("identity") != identity:
            theirs = saved.get("identity") or {}
            differing = sorted(k for k in {*identity, *theirs} if identity.get(k) != theirs.get(k))
            raise ValueError(
                f"{folder} holds training of {saved.get('method')} with other settings, model, "
                f"data or code (here: {', '.join(differing)}; code is editbench's source, "
                "docs/provenance.md); use another --out or the settings and code it was started "
                "with"
            )
        latest = storage.latest_state(folder) if saved is not None else None
        if latest is not None:
            net, optimizer_state, best, state = storage.load_state(latest)
            storage.load_net_tensors(method, {k: v.to(method.ctx.device) for k, v in net.items()})
            optimizer = self._optimizer(saved["lr_meta_lr"])
            storage.load_optimizer(optimizer, optimizer_state)
            log.info("%s: resuming training in %s at step %d", method.name, folder, state["step"])
        else:
            edit_lrs = self._warm_up()
            lr_meta_lr = (
                config.lr_meta_lr
                if config.lr_meta_lr is not None
                else 0.05 * min(edit_lrs.values())
            )
            optimizer = self._optimizer(lr_meta_lr)
            storage.write_json(folder / storage.CONFIG_FILE, {
                "format": storage.FORMAT_VERSION, "method": method.name, "identity": identity,
                "modules": storage.describe_modules(method), "edit_lr": edit_lrs,
                "lr_meta_lr": lr_meta_lr,
                "model": getattr(method.ctx.model.config, "_name_or_path", None),
                "n_train": len(self.train), "n_val": len(self.val),
            })
            log.info("%s: initial edit lr %s (%s)", method.name,
                     ", ".join(f"{v:.3g}" for v in edit_lrs.values()),
                     "set" if config.edit_lr is not None else f"edit_scale={config.edit_scale}")
            best, state = {}, {
                "step": 0,
                "best": None,
                "best_step": 0,
                "bad": 0,
                "history": [],
                "stopped": False,
            }
        self._loop(optimizer, best, state)

    def _loop(self, optimizer: torch.optim.Optimizer, best: dict, state: dict) -> None:
        method, config, max_steps = self.method, self.config, self.max_steps
        parameters = self._trainable()
        bar = progress(
            total=max_steps, initial=state["step"], desc=f"training {method.name}", unit="step"
        )
        train_sums: dict[str, float] = {}
        try:
            while not state["stopped"]:
                # the first validation is at step 0, unless the normalisers have no statistics yet
                if (state["history"] or not config.warm_up) and self._below_cap(state["step"]):
                    parts = self.walk(
                        self._sequence(state["step"]),
                        train=True,
                        key=f"{self.seed}-train-{state['step']}",
                    )
                    torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    state["step"] += 1
                    bar.update(1)
                    for name, value in parts.items():
                        train_sums[name] = train_sums.get(name, 0.0) + value
                    if state["step"] % config.val_every and self._below_cap(state["step"]):
                        continue
                best = self._validate(state, best, train_sums)
                train_sums = {}
                bar.set_postfix(val=f"{state['history'][-1]['val_loss']:.4f}")
                storage.save_state(self.folder, state["step"], storage.net_tensors(method),
                                     storage.optimizer_tensors(optimizer), best, state)
        finally:
            bar.close()
        kept = state["best_step"] if config.select_best else state["step"]
        kept_loss = next(h["val_loss"] for h in state["history"] if h["step"] == kept)
        storage.finish(
            self.folder,
            best,
            {
                "kept_step": kept,
                "kept_val_loss": kept_loss,
                "steps": state["step"],
                "history": state["history"],
            },
        )
        log.info(
            "%s: trained %d steps; best validation loss %.4f at step %d; "
            "kept the network of step %d",
            method.name,
            state["step"],
            state["best"],
            state["best_step"],
            kept,
        )

    def _validate(self, state: dict, best: dict, train_sums: dict[str, float]) -> dict:
        val = self.validate()
        steps = state["step"] - (state["history"][-1]["step"] if state["history"] else 0)
        record = {"step": state["step"], "val_loss": val["loss"],
                  **{f"val_{k}": v for k, v in val.items() if k != "loss"},
                  **{f"train_{k}": v / max(steps, 1) for k, v in train_sums.items()}}
        state["history"].append(record)
        log.info("%s step %d: %s", self.method.name, state["step"],
                 ", ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "step"))
        if state["best"] is None or val["loss"] < state["best"] - IMPROVEMENT * abs(state["best"]):
            state.update(best=val["loss"], best_step=state["step"], bad=0)
            best = storage.net_tensors(self.method)
        else:
            state["bad"] += 1
        if not self.config.select_best:  # the releases evaluate the last network
            best = storage.net_tensors(self.method)
        if state["bad"] >= self.config.patience or not self._below_cap(state["step"]):
            state["stopped"] = True
        return best
