"""The blocks below a fine-tuned layer, run once per record and batch and replayed (issue 28).

GRACE, WISE and MEMOIR train a memory at one layer for tens of steps per edit on a batch that
never changes, and the blocks below that layer do not change either: ``same_batch`` records the
block output once per edit and replays it (issue 34: they were the default run's slowest edits).
So do MEMIT's value steps (``locate/values.py``), up to and including the block whose output
they shift.

Fine-tuning one layer (FT-L, FT-M, LocFT-BF) repeats forward passes over the same records for
every epoch of a batch, while every weight below the tuned layer stays fixed: the hidden state
entering that layer is the same each time. The releases (EasyEdit, ROME, LocFT) recompute it every
time. Here the first pass over a record records, at its real positions, the output of the block
just below the tuned layer; a later chunk made only of recorded records skips the blocks below and
starts from those rows, padded on the right with zeros as the chunk's batch is. The masks are
still computed, and the model's own forward runs unchanged from the tuned layer up.

Why the padding does not matter: batches are right-padded and attention is causal with padded keys
masked, so a real position never reads a padded one, and the loss is masked to answer tokens.
A chunk repeated with its records in the same order and the same width (EasyEdit's ``chunk: 1``,
ROME's fixed order, LocFT-BF's batch within one mini-batch) replays exactly the numbers the
release recomputes; a reshuffled chunk (LocFT-BF's epochs of several mini-batches) gets each row as
computed in another batch, which equals recomputing it up to the batched kernels' float rounding.

Inside the tuned layer's block the same holds for every module call that completes before the tuned
module is entered (issue 34): its inputs come from below, so they cannot depend on the tuned
weights. Given the tuned module's name, the first pass over a repeated batch (``same_batch``'s
first call; a chunk of ``__call__`` on its first pass where the caller's epochs repeat their chunks
in order, FT-M's and FT-L's, else the second time it comes, so that a chunk that never repeats
keeps nothing) records those calls' outputs (the attention, the norms, an MLP's gate and up
projections), and later passes replay them: the block computes only the tuned module and what
follows it. So do the calls outside every block that precede the first one (the embeddings, the
rotary tables), which read only the batch's tokens and positions. A module called more than once in
the pass (one whose output a later call could need anew) is never replayed, nor anything inside the
tuned module. The same pass records how the model called the blocks from the tuned one up; where
calling them directly reproduces the model's logits, later passes do only that
(``upper_blocks.py``).

Where the epochs cut the batch into fresh chunks (LocFT-BF's reshuffled mini-batches), no chunk
repeats, so the calls inside the tuned block before the tuned module are kept per record instead,
at the record's real positions as the lower blocks' rows are, and a chunk whose records were all
seen gets them back padded on the right (``_BeforeTuned.by_rows``; up to ``ROW_BYTES``, since these
rows are several times a record's hidden state). The calls outside the blocks are left to run: a
rotary table is the chunk's, not a record's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from contextlib import contextmanager, nullcontext
from functools import partial

import torch
from torch import nn

from ..core.models import ModelLayout
from .upper_blocks import UpperBlocks, outside_blocks


class LowerBlocks:
    """Runs ``forward`` for chunks of records (``keys``, one per record in the batch's row order,
    ``lengths`` their real tokens), replaying the blocks below ``layer`` for a chunk whose records
    were all seen. Valid while the weights below ``layer`` do not change: one per edit batch
    (``FineTune.apply``)."""

    def __init__(self, model: nn.Module, layout: ModelLayout, layer: int,
                 tuned: str | None = None, chunks_repeat: bool = False,
                 idle_hooks: Iterable[int] = ()) -> None:
        self.blocks = [model.get_submodule(layout.block_name(i)) for i in range(layer)]
        self.rows: dict[Hashable, torch.Tensor] = {}  # a record's (length, hidden) input to `layer`
        self.replayable = True  # False once a block's output is not a plain tensor (left alone)
        self.whole: torch.Tensor | None = None  # the output for a repeated batch (`same_batch`)
        # the calls inside the tuned layer's block before the tuned module (``tuned``, a name)
        self.inside = _BeforeTuned(model, layout, layer, tuned) if tuned else None
        if self.inside is not None:  # hooks the caller has declared idle on the direct path
            self.inside.upper.idle_hooks = set(idle_hooks)
        # every chunk comes again, in a fixed epoch order (FT-M's, FT-L's): what its later
        # passes replay is recorded on its first (else on its second, so that a chunk that never
        # repeats keeps nothing)
        self.chunks_repeat = chunks_repeat

    def __call__(self, keys: Sequence[Hashable], lengths: Sequence[int],
                 forward: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self.inside is not None:
            chunk = tuple(keys)
            seen = self.inside.seen(chunk)
            if not self.chunks_repeat:  # chunks of fresh orders: their records' rows (below)
                forward = self.inside.by_rows(keys, lengths, forward)
            inner = self.inside.around(chunk, forward, record=seen or self.chunks_repeat)
            if self.inside.direct(chunk):  # from the tuned block up (``upper_blocks.py``)
                return inner()
        else:
            inner = forward
        if not self.blocks or not self.replayable:
            return inner()
        if all(key in self.rows for key in keys):
            hidden = _padded([self.rows[key] for key in keys])
            with _replaying(self.blocks, hidden):
                return inner()
        return self._record(keys, lengths, inner)

    def same_batch(self, forward: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``forward`` of one batch that every call repeats unchanged (an edit's steps in GRACE,
        WISE and MEMOIR, the value steps of MEMIT and its kin): the first call records the whole
        output of the block below ``layer``, padding and all, and later calls replay it as it is,
        so the batch may be padded on either side. Exactly the numbers the blocks would compute
        again."""
        if self.inside is not None:
            forward = self.inside.around("whole", forward, record=True)
            if self.inside.direct("whole"):  # from the tuned block up (``upper_blocks.py``)
                return forward()
        if not self.blocks or not self.replayable:
            return forward()
        if self.whole is not None:  # a copy: a block above may change its input in place
            with _replaying(self.blocks, self.whole.clone()):
                return forward()

        def capture(_module, _args, output):
            if not isinstance(output, torch.Tensor):
                self.replayable = False
                return
            self.whole = output.detach().clone()

        # first among the block's hooks: what is recorded is the block's own output, and a hook
        # that changes it (MEMIT's value delta, ``locate/values.py``) runs again on the replay
        handle = self.blocks[-1].register_forward_hook(capture, prepend=True)
        with self._own(handle):
            return forward()

    def _record(self, keys, lengths, forward):
        def capture(_module, _args, output):
            if not isinstance(output, torch.Tensor):
                self.replayable = False
                return
            for row, (key, length) in enumerate(zip(keys, lengths)):
                self.rows.setdefault(key, output[row, :length].detach().clone())

        handle = self.blocks[-1].register_forward_hook(capture)
        with self._own(handle):
            return forward()

    @contextmanager
    def _own(self, handle):
        """While a recording hook of ours sits on a lower block: one the direct path from the
        tuned block up (``upper_blocks.py``) may skip; removed after."""
        own = self.inside.upper.own_hooks if self.inside is not None else set()
        own.add(handle.id)
        try:
            yield
        finally:
            own.discard(handle.id)
            handle.remove()


@contextmanager
def _replaying(blocks: Sequence[nn.Module], hidden: torch.Tensor):
    """Every block below the tuned layer returns the replayed hidden state without computing: the
    first tuned block receives it, and the blocks before it pass it along unread."""
    with _returning(blocks, [lambda: hidden] * len(blocks)):
        yield


@contextmanager
def _returning(modules: Sequence[nn.Module], outputs: Sequence[Callable[[], object]]):
    """Each of ``modules`` returns what its entry of ``outputs`` makes instead of computing (its
    hooks still run around it)."""
    # an instance attribute, set in the instance's dict: what ``nn.Module.__setattr__`` does
    # for a plain value after its checks for parameters, buffers and submodules, which every
    # replayed step paid for each module
    previous = [module.__dict__.get("forward") for module in modules]  # an offloading hook's
    for module, output in zip(modules, outputs):
        module.__dict__["forward"] = lambda *args, _output=output, **kwargs: _output()
    try:
        yield
    finally:
        for module, forward in zip(modules, previous):
            if forward is None:
                del module.__dict__["forward"]
            else:
                module.__dict__["forward"] = forward


class _BeforeTuned:
    """The module calls that complete before the module named ``tuned`` is entered, recorded per
    batch (a chunk's keys, or the one repeated batch) and replayed (see the module docstring):
    inside the tuned layer's block, and outside every block (the embeddings and the rotary
    tables, which the model computes before its first block from the input alone)."""

    def __init__(self, model: nn.Module, layout: ModelLayout, layer: int, tuned: str) -> None:
        self.tuned = model.get_submodule(tuned)
        block_name = layout.block_name(layer)
        outside = outside_blocks(model, layout)
        inside = {f"{block_name}.{name}": m
                  for name, m in model.get_submodule(block_name).named_modules() if name}
        self.candidates = {name: m for name, m in {**outside, **inside}.items()
                           if not _holds(name, tuned)}
        self.in_block = set(inside)
        # the candidates inside the tuned block: those a record's rows can hold (``by_rows``)
        self.in_block_candidates = {name: m for name, m in self.candidates.items()
                                    if name in self.in_block}
        self.in_block_outputs: dict[Hashable, dict[str, object]] = {}  # those the direct path needs
        self.outputs: dict[Hashable, dict[str, object]] = {}
        # per record (a key of a chunk that may not repeat): the in-block calls' outputs at its
        # real positions, and their bytes, kept up to ROW_BYTES
        self.row_outputs: dict[Hashable, dict[str, object]] = {}
        self.row_bytes = 0
        self.times_seen: Counter[Hashable] = Counter()
        self.upper = UpperBlocks(model, layout, layer)

    def seen(self, batch: Hashable) -> bool:
        """Count one more pass over ``batch``; whether it came before (then it is recorded)."""
        self.times_seen[batch] += 1
        return self.times_seen[batch] > 1

    def around(self, batch: Hashable, forward: Callable[[], torch.Tensor],
               record: bool) -> Callable[[], torch.Tensor]:
        """``forward`` replaying what was recorded for ``batch``; else recording it (when
        ``record``); else as it is."""
        if batch in self.outputs:
            kept = self.outputs[batch]
            direct = self.upper.path(batch)
            if direct is not None:  # nothing outside the tuned block is called
                if batch not in self.in_block_outputs:
                    self.in_block_outputs[batch] = {name: out for name, out in kept.items()
                                                    if name in self.in_block}
                return lambda: self._replay(self.in_block_outputs[batch], direct)
            return lambda: self._replay(kept, forward)
        if record:
            return lambda: self._record(batch, forward)
        return forward

    def _record(self, batch: Hashable, forward: Callable[[], torch.Tensor]) -> torch.Tensor:
        result, outputs = self._pass(
            self.candidates, lambda out: _detached(out) if _plain(out) else None, forward,
            self.upper.recording())
        if outputs is not None:
            self.outputs[batch] = outputs
            self.upper.keep(batch, result)
        return result

    def _pass(self, modules: dict[str, nn.Module], keep: Callable[[object], object],
              forward: Callable[[], torch.Tensor], around=None
              ) -> tuple[torch.Tensor, dict[str, object] | None]:
        """One pass of ``forward`` (inside the context ``around``, if any), noting what ``keep``
        makes of the output of each of ``modules`` that completes before the tuned module is
        entered (None: nothing). Returns the pass's result and, by name, what was kept of the
        outermost of those modules called once (None if the tuned module was never entered: a
        replayed module's children do not run, and a module called again might be needed anew)."""
        calls: Counter[str] = Counter()
        before: dict[str, object] = {}
        entered: list[bool] = []

        def done(name):
            def hook(_module, _args, output):
                calls[name] += 1
                if not entered and name not in before:
                    kept = keep(output)
                    if kept is not None:
                        before[name] = kept
            return hook

        # first among each module's hooks: what is kept is the module's own output, and a hook
        # that changes it runs again on the replay
        handles = [m.register_forward_hook(done(name), prepend=True)
                   for name, m in modules.items()]
        handles.append(self.tuned.register_forward_pre_hook(lambda *_: entered.append(True)))
        try:
            with around if around is not None else nullcontext():
                result = forward()
        finally:
            for handle in handles:
                handle.remove()
        if not entered:
            return result, None
        once = {name for name in before if calls[name] == 1}
        return result, {name: before[name] for name in once
                        if not any(name.startswith(outer + ".") for outer in once)}

    def by_rows(self, keys: Sequence[Hashable], lengths: Sequence[int],
                forward: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        """``forward`` for a chunk that may never come again (LocFT-BF's reshuffled
        mini-batches): where every record of it was seen in an earlier chunk, the calls inside the
        tuned block before the tuned module return those records' rows, padded on the right with
        zeros (the module docstring says why the padding is never read); otherwise the pass keeps
        the rows of its records not kept yet. A row taken from another chunk equals the one this
        chunk would compute up to the batched kernels' float rounding, as the lower blocks' rows
        do."""
        kept = [self.row_outputs.get(key) for key in keys]
        if all(k is not None for k in kept) and len({tuple(k) for k in kept}) == 1:
            return lambda: self._replay(
                {name: _padded([k[name] for k in kept]) for name in kept[0]}, forward, fresh=True)
        if self.row_bytes >= ROW_BYTES:
            return forward
        return lambda: self._record_rows(keys, lengths, forward)

    def _record_rows(self, keys, lengths, forward) -> torch.Tensor:
        rows, width = len(keys), max(lengths)
        result, outputs = self._pass(self.in_block_candidates,
                                     lambda out: out if _per_row(out, rows, width) else None,
                                     forward)
        if outputs:
            for row, (key, length) in enumerate(zip(keys, lengths)):
                if key not in self.row_outputs:
                    kept = {name: _row(out, row, length) for name, out in outputs.items()}
                    self.row_outputs[key] = kept
                    self.row_bytes += sum(_nbytes(out) for out in kept.values())
        return result

    def direct(self, batch: Hashable) -> bool:
        """Whether ``batch``'s passes call the blocks from the tuned one up directly."""
        return batch in self.outputs and self.upper.path(batch) is not None

    def _replay(self, kept: dict[str, object], forward: Callable[[], torch.Tensor],
                fresh: bool = False) -> torch.Tensor:
        """``forward`` with each module of ``kept`` returning its output: a copy, since a later
        operation may change it in place, unless the outputs were made for this one pass
        (``fresh``)."""
        outputs = [(lambda _out=out: _out) if fresh else partial(_copied, out)
                   for out in kept.values()]
        with _returning([self.candidates[name] for name in kept], outputs):
            return forward()


#: the most bytes of per-record rows a ``_BeforeTuned`` keeps (``by_rows``): a record's rows are
#: several times its hidden state (an MLP's gate and up projections are its inner width), so a call
#: of thousands of edits on a 7B model keeps the rows of the first records alone
ROW_BYTES = 1 << 30


def _per_row(output, rows: int, width: int) -> bool:
    """A tensor laid out (rows, positions, ...) as the chunk's batch, or a tuple of such tensors and
    None: an output whose row ``b`` is record ``b``'s."""
    if isinstance(output, tuple):
        return (any(isinstance(item, torch.Tensor) for item in output)
                and all(item is None or _per_row(item, rows, width) for item in output))
    return (isinstance(output, torch.Tensor) and output.dim() >= 2
            and tuple(output.shape[:2]) == (rows, width))


def _row(output, row: int, length: int):
    """Record ``row``'s real positions of a per-row output, detached and copied."""
    if isinstance(output, tuple):
        return tuple(None if item is None else _row(item, row, length) for item in output)
    return output[row, :length].detach().clone()


def _padded(rows: list):
    """Per-record rows (a record's real positions each) stacked into a right-padded batch as wide
    as the longest, zeros after each record's; tuples entry by entry."""
    if isinstance(rows[0], tuple):
        return tuple(None if rows[0][i] is None else _padded([r[i] for r in rows])
                     for i in range(len(rows[0])))
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)


def _nbytes(output) -> int:
    if isinstance(output, tuple):
        return sum(_nbytes(item) for item in output if item is not None)
    return output.numel() * output.element_size()


def _holds(name: str, tuned: str) -> bool:
    """Whether the module ``name`` is the module ``tuned``, inside it, or holds it."""
    return (name == tuned or name.startswith(tuned + ".") or tuned.startswith(name + "."))


def _plain(output) -> bool:
    """A tensor, or a tuple of tensors and None: what a replay can hand back as it was."""
    if isinstance(output, tuple):
        return all(item is None or isinstance(item, torch.Tensor) for item in output)
    return isinstance(output, torch.Tensor)


def _detached(output):
    """``output`` (a tensor, or a tuple of them and None) detached from the graph, copied."""
    if isinstance(output, torch.Tensor):
        return output.detach().clone()
    if isinstance(output, tuple):
        return tuple(_detached(item) for item in output)
    return output


def _copied(output):
    """A copy of a recorded output: a later operation may change it in place."""
    if isinstance(output, torch.Tensor):
        return output.clone()
    if isinstance(output, tuple):
        return tuple(_copied(item) for item in output)
    return output
