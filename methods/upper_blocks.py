"""The blocks from a tuned layer up and the model's last modules, called without the model.

An edit that trains one module for tens of steps on a batch that repeats (``lower_blocks.py``)
needs, after the first passes, only what the tuned module changes: the tuned layer's block from
its input, the blocks above it, and the modules after the last block (the final norm, the head).
On a small model most of a step was the model's own forward around those blocks: the wrappers of
the model classes, the masks and rotary tables made again, the replayed lower blocks called. So
one pass of the model over the batch records what each of those blocks was called with and which
modules ran after the last one, and later passes call just those.

Kept only where it is the same computation: the path is run once on the recording pass's own
input and used only if it gives bitwise the logits that pass returned (a model whose logits are
more than its head's output, Gemma 2's soft cap, fails this and keeps the model's forward), and
never while a hook sits on a module the path does not call, checked before that trial and again
when the path is first used for a batch, unless its owner has declared it idle there (WISE's and
MEMOIR's hooks on the model record the call for routing, which their training does not read:
``LowerBlocks(idle_hooks=...)``, ``idle_while_editing``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from contextlib import contextmanager
from weakref import WeakKeyDictionary

import torch
from torch import nn
from torch.nn.modules import module as torch_module

from ..core.models import ModelLayout

#: per model: its modules outside every block, by name (the same for every edit of a run)
_OUTSIDE: WeakKeyDictionary[nn.Module, dict[str, nn.Module]] = WeakKeyDictionary()
#: per model, tuned layer and tail: whether the direct path gave the model's logits bitwise on the
#: batch it was first tried on. The path's composition is the model's (which blocks, which modules
#: after them), not the batch's: everything a batch changes (masks, positions) is in the calls
#: recorded for it. So one trial per model and layer, not one per edit. (Only the verdict: a
#: value holding the model's modules would keep the model alive.)
_TRIED: WeakKeyDictionary[nn.Module, dict[tuple, bool]] = WeakKeyDictionary()


def outside_blocks(model: nn.Module, layout: ModelLayout) -> dict[str, nn.Module]:
    """The modules of ``model`` outside its blocks and holding none of them (the embeddings, the
    rotary tables, the final norm, the head), by name."""
    if model not in _OUTSIDE:
        names = [layout.block_name(i) for i in range(layout.n_layers)]
        holding = {name.rsplit(".", i)[0] for name in names
                   for i in range(1, name.count(".") + 1)} | {""}
        _OUTSIDE[model] = {name: m for name, m in model.named_modules()
                           if name not in holding and not _within(name, names)}
    return _OUTSIDE[model]


class UpperBlocks:
    """Records, per batch, how the model called its blocks from ``layer`` up and what ran after
    them (``recording``, then ``keep``), and gives the direct call for a batch (``path``)."""

    def __init__(self, model: nn.Module, layout: ModelLayout, layer: int) -> None:
        names = [layout.block_name(i) for i in range(layout.n_layers)]
        self.model, self.layer = model, layer
        self.blocks = [model.get_submodule(name) for name in names[layer:]]
        self.block_names = names[layer:]
        self.outside = outside_blocks(model, layout)
        self._seen: dict[str, object] = {}
        self.paths: dict[Hashable, Callable[[], torch.Tensor]] = {}
        self.skipped: dict[Hashable, list[nn.Module]] = {}  # the modules a batch's path skips
        self._skipped: dict[tuple[str, ...], list[nn.Module]] = {}  # the same, per tail
        #: the ids of the hooks ``lower_blocks`` has on the lower blocks while it records them
        self.own_hooks: set[int] = set()
        #: the ids of hooks their owner has declared idle on the direct path: they only read what
        #: the owner also holds for the batch (WISE's copy of the attention mask), so skipping them
        #: changes nothing (``LowerBlocks(idle_hooks=...)``)
        self.idle_hooks: set[int] = set()
        self.checked: dict[Hashable, bool] = {}  # whether no hook sits where the path skips

    @contextmanager
    def recording(self):
        """Around one pass of the model: what each block from ``layer`` up was called with, and
        the order in which the modules outside the blocks and the last block finished."""
        inputs: dict[int, list] = {}
        finished: list[str] = []

        def called(index):
            def hook(_module, args, kwargs):
                inputs.setdefault(index, []).append((args, dict(kwargs)))
            return hook

        def done(name):
            return lambda *_: finished.append(name)

        handles = [block.register_forward_pre_hook(called(i), with_kwargs=True)
                   for i, block in enumerate(self.blocks)]
        handles.append(self.blocks[-1].register_forward_hook(done("")))
        handles += [m.register_forward_hook(done(name)) for name, m in self.outside.items()]
        self._seen = {"inputs": inputs, "finished": finished}
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def keep(self, batch: Hashable, logits: object) -> None:
        """After the recorded pass, before any weight changes: keep the direct call for ``batch``
        where, run on the pass's own input, it gives bitwise the ``logits`` the pass returned (tried
        once per model and layer, ``_TRIED``)."""
        inputs, finished = self._seen.pop("inputs", {}), self._seen.pop("finished", [])
        if (not isinstance(logits, torch.Tensor) or len(inputs) != len(self.blocks)
                or any(len(calls) != 1 for calls in inputs.values())
                or finished.count("") != 1):
            return
        calls = []
        for index in range(len(self.blocks)):
            ((args, kwargs),) = inputs[index]
            if args:
                hidden, args = args[0], args[1:]
            elif "hidden_states" in kwargs:
                hidden = kwargs.pop("hidden_states")
            else:
                return
            if index == 0:
                if not isinstance(hidden, torch.Tensor):
                    return
                start = hidden.detach().clone()
            calls.append((args, kwargs))
        after = finished[finished.index("") + 1:]
        if any(count > 1 for count in Counter(after).values()):
            return
        tail_names = tuple(name for name in after if not _within(name, [o for o in after
                                                                        if o != name]))
        tail = [self.outside[name] for name in tail_names]

        def direct() -> torch.Tensor:
            hidden = start.clone()  # a block may change its input in place
            for block, (args, kwargs) in zip(self.blocks, calls):
                hidden = block(hidden, *args, **kwargs)
                if not isinstance(hidden, torch.Tensor):
                    raise _NotATensor
            for module in tail:
                hidden = module(hidden)
            return hidden

        tried = _TRIED.setdefault(self.model, {})
        key = (self.layer, tail_names)
        skipped = self._skipped.get(tail_names)
        if skipped is None:
            skipped = self._skipped[tail_names] = [
                m for name, m in self.model.named_modules()
                if not _within(name, [*self.block_names, *tail_names])]
        if key not in tried:
            # a hook on the model or around its blocks reads the model's own call, unless
            # declared idle: refused before the trial below, whose calls such a method
            # would take for a step's (once tried, ``path`` looks at the hooks when a batch's path
            # is first asked)
            if _hooked(skipped, self.own_hooks | self.idle_hooks):
                return
            try:
                same = torch.equal(direct().detach(), logits.detach())
            except _NotATensor:
                same = False
            tried[key] = same
        if tried[key]:
            self.paths[batch] = direct
            self.skipped[batch] = skipped

    def path(self, batch: Hashable) -> Callable[[], torch.Tensor] | None:
        """The direct call for ``batch``, if one was kept and no hook waits on a module it skips
        (looked at once per batch, when it is first asked for)."""
        direct = self.paths.get(batch)
        if direct is None:
            return None
        if batch not in self.checked:
            self.checked[batch] = not _hooked(self.skipped[batch],
                                              self.own_hooks | self.idle_hooks)
        return direct if self.checked[batch] else None


class _NotATensor(Exception):
    """A block returned something other than its hidden state (an older model class's tuple)."""


def _within(name: str, owners) -> bool:
    """Whether the module ``name`` is one of ``owners`` or inside one."""
    return any(name == owner or name.startswith(owner + ".") for owner in owners)


def _hooked(modules: list[nn.Module], own: set[int]) -> bool:
    """Whether a forward hook or pre-hook other than the ``own`` ones (ids) would run on any of
    ``modules`` (their own, or a global one)."""
    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(set(m._forward_hooks).difference(own) or set(m._forward_pre_hooks).difference(own)
               for m in modules)
