"""Which modules the hypernetworks edit, and the hooks that read keys and output gradients there.

A linear layer's gradient for one token is the outer product of its input (the *key*) and the
gradient of the loss with respect to its output (MEND, Mitchell et al. 2022, §3.1). Every editor
of this family therefore needs, for each edited module, the keys and output gradients at the
tokens that carry the edit: the answer tokens (the released MALMEN and RLEdit code's
``token: ans``), i.e. the positions whose logits predict a target token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ...core.models import ModelLayout, weight_as_out_in
from ...core.tokenize import PairBatch

MODULE_CHOICES = ("auto", "mlp_in", "mlp_out", "mlp_in_out")

#: (method, published architecture) -> (layers, modules) as each release edits them. The RLEdit
#: release's model configs serve its MEND and MALMEN baselines too (they share the model files).
PUBLISHED_MODULES: dict[tuple[str, str], tuple[tuple[int, ...], str]] = {
    # MEND e04fdb9 config/model/gpt2xl.yaml:5-11 and gptj.yaml:5-11: fc_in and fc_out of the
    # top 3 layers
    ("mend", "gpt2-xl"): ((45, 46, 47), "mlp_in_out"),
    ("mend", "gpt-j-6b"): ((25, 26, 27), "mlp_in_out"),
    # MALMEN 1df295d config/model/gpt-j.yaml:3-9 (the top six, the last included) and gpt-2.yaml:3-9
    ("malmen", "gpt-j-6b"): (tuple(range(22, 28)), "mlp_out"),
    ("malmen", "gpt2"): (tuple(range(6, 12)), "mlp_out"),
    # RLEdit c6576a1 config/model/llama-3-instruct.yaml:50-81, gemma-2.yaml:53-92,
    # mistral-7b.yaml:21-22 (down_proj of 17-18 since a5c6fc0; the first commits had up_proj of
    # 22-31); GPT-2 XL and GPT-J from the dev commit 847f0cd (config/model/gpt-2-xl.yaml:14-22,
    # gpt-j.yaml:6-11)
    **{
        (method, "llama-3-8b"): (tuple(range(22, 31)), "mlp_in")
        for method in ("rledit", "malmen", "mend")
    },
    **{
        (method, "gemma-2-9b"): (tuple(range(32, 41)), "mlp_in")
        for method in ("rledit", "malmen", "mend")
    },
    **{(method, "mistral-7b"): ((17, 18), "mlp_out") for method in ("rledit", "malmen", "mend")},
    ("rledit", "gpt2-xl"): (tuple(range(32, 41)), "mlp_out"),
    ("rledit", "gpt-j-6b"): (tuple(range(22, 28)), "mlp_out"),
}


def model_presets(method: str) -> dict[str, dict[str, object]]:
    """``method``'s presets named after the models its release covers: the runner picks the one of
    the model it edits (``MethodRef.config``), and ``METHOD@MODEL`` names one by hand."""
    return {arch: {"layers": layers, "modules": which}
            for (name, arch), (layers, which) in PUBLISHED_MODULES.items() if name == method}
TOKEN_CHOICES = ("answer", "all")


@dataclass(frozen=True)
class EditedModule:
    """One edited linear map, with its weight seen as keys (in) -> values (out)."""

    name: str  # module path, e.g. model.layers.2.mlp.gate_proj
    key_size: int
    value_size: int
    conv1d: bool

    @property
    def parameter(self) -> str:
        return f"{self.name}.weight"

    @property
    def shape(self) -> tuple[int, int]:
        return (self.key_size, self.value_size)


def default_layers(n_layers: int) -> list[int]:
    """A band of upper layers that stops below the top one.

    The RLEdit authors edit layers 22-30 of the 32 in Llama-3-8B, Gemma-2-9B and Mistral-7B (gate
    and up projections); MALMEN edits the top six of GPT-J's 28. We take the band that starts at
    70% of the depth and ends one below the top, widened downwards to at least two layers:
    22-30 of 32, 1-2 of 4, 0-1 of 3.
    """
    if n_layers < 2:
        return [0]
    last = n_layers - 2
    first = max(0, min(round(0.7 * n_layers), last - 1))
    return list(range(first, last + 1))


def select_modules(model: nn.Module, layout: ModelLayout, layers: Sequence[int],
                   which: str = "auto") -> list[EditedModule]:
    """The edited modules, chosen from the model's config (never from its name).

    ``auto``: the MLP input projections (gate and up) of gated MLPs (Llama-style models, as the
    RLEdit authors choose), else the MLP output projection (GPT-2's ``c_proj``, GPT-J's ``fc_out``,
    as MEND and MALMEN choose); ``mlp_in_out``: both (MEND on GPT-style models).
    """
    if which not in MODULE_CHOICES:
        raise ValueError(f"modules must be one of {', '.join(MODULE_CHOICES)}, got {which!r}")
    if which == "auto":
        which = "mlp_in" if len(layout.family.mlp_in) > 1 else "mlp_out"
    chosen = layers if layers else default_layers(layout.n_layers)
    names = []
    for layer in chosen:
        layer = layout.resolve_layer(layer)
        names += {"mlp_in": layout.mlp_in_names(layer), "mlp_out": [layout.mlp_out_name(layer)],
                  "mlp_in_out": [*layout.mlp_in_names(layer), layout.mlp_out_name(layer)]}[which]
    return named_modules(model, layout, names)


def named_modules(
    model: nn.Module, layout: ModelLayout, names: Sequence[str]
) -> list[EditedModule]:
    """The edited modules at these module paths (e.g. ``model.layers.11.mlp.gate_proj``), as a
    release lists them when its choice is not a band of layers of one kind (UltraEdit's Llama-3:
    gate projections of 11-15 and up projections of 18-24)."""
    out = []
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"the model has no module {name!r}") from None
        if not hasattr(module, "weight") or getattr(module.weight, "dim", lambda: 0)() != 2:
            raise ValueError(f"module {name!r} is not a linear map (it has no 2-d weight)")
        weight = weight_as_out_in(module, layout.family.conv1d)
        out.append(
            EditedModule(name, int(weight.shape[1]), int(weight.shape[0]), layout.family.conv1d)
        )
    return out


@dataclass
class LowRankUpdate:
    """A (key_size, value_size) weight update kept as the factors it is made of, ``left.T @ right``:
    one row per answer token (MEND: pseudo-keys and ``-lr`` times pseudo-gradients; MALMEN: keys and
    the solved value changes). Kept so, a step of RLEdit's back-tracking window costs
    rows x (key_size + value_size) numbers instead of key_size x value_size (18 dense 4096x14336
    updates of Llama-3-8B at depth 10 are ~42 GB in float32). ``left=None``: ``right`` is the dense
    update itself (MALMEN's solve with at least as many rows as key dimensions)."""

    left: torch.Tensor | None  # (rows, key_size)
    right: torch.Tensor  # (rows, value_size), or (key_size, value_size) when left is None

    @property
    def shape(self) -> tuple[int, int]:
        key_size = self.right.shape[0] if self.left is None else self.left.shape[1]
        return (key_size, self.right.shape[1])

    def dense(self) -> torch.Tensor:
        return self.right if self.left is None else self.left.T @ self.right

    def detach(self) -> LowRankUpdate:
        return LowRankUpdate(None if self.left is None else self.left.detach(), self.right.detach())

    def apply_to(self, keys: torch.Tensor) -> torch.Tensor:
        """``keys @ update`` for keys (..., key_size), through the factors: (..., value_size)."""
        keys = keys.to(self.right.dtype)
        return keys @ self.right if self.left is None else (keys @ self.left.T) @ self.right

    def squared_norm(self) -> torch.Tensor:
        """The squared Frobenius norm of the update, ``tr(L Lᵀ R Rᵀ)`` from two rows x rows Gram
        matrices."""
        if self.left is None:
            return self.right.float().pow(2).sum()
        left, right = self.left.float(), self.right.float()
        return ((left @ left.T) * (right @ right.T)).sum()

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.left, self.right) if t is not None)


@contextmanager
def routed_updates(model: nn.Module, modules: Sequence[EditedModule],
                   updates: dict[str, Sequence[LowRankUpdate]]) -> Iterator[None]:
    """Within the block, each module's output carries gradient into its ``updates`` (already in the
    live weights) without changing value: the hook adds ``u(k) - stopgrad(u(k))`` with
    ``u(k) = k Lᵀ R`` summed over the updates, for the detached input ``k``. That equals the
    gradient of the live weight plus ``ΔW - stopgrad(ΔW)`` (the input's own gradient goes through
    the live weight alone) without forming any dense update. RLEdit's back-tracking uses this to let
    the loss at step t reach the updates of the steps before it."""

    def hook(chosen: Sequence[LowRankUpdate]):
        def add(_module, args, output):
            keys = args[0].detach()
            delta = sum(u.apply_to(keys) for u in chosen)
            return output + (delta - delta.detach()).to(output.dtype)
        return add

    handles = [model.get_submodule(m.name).register_forward_hook(hook(updates[m.name]))
               for m in modules if updates.get(m.name)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class KeysAndGrads:
    """Per edited module: keys (rows, key_size) and output gradients (rows, value_size), float32;
    one row per answer token of the batch. ``groups``: the rows of each sub-batch they were read in,
    in order (one group when the batch was read whole)."""

    keys: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor]
    groups: tuple[int, ...] = ()

    @classmethod
    def concat(cls, parts: Sequence[KeysAndGrads]) -> KeysAndGrads:
        names = list(parts[0].keys)
        return cls({n: torch.cat([p.keys[n] for p in parts]) for n in names},
                   {n: torch.cat([p.grads[n] for p in parts]) for n in names},
                   tuple(g for p in parts for g in p.groups))


def keys_and_grads(model: nn.Module, modules: Sequence[EditedModule], batch: PairBatch,
                   loss_fn: Callable[[torch.Tensor, PairBatch], torch.Tensor],
                   mask: torch.Tensor | None = None, sub_batch: int = 0) -> KeysAndGrads:
    """Run the batch once forward and backward and read each module's keys and output gradients
    at the answer tokens (``batch.target_mask``), or wherever ``mask`` says. ``sub_batch``: the
    batch holds consecutive sub-batches of that many records, and the rows are grouped by them
    (``KeysAndGrads.groups``), as if each had been read alone; 0: one group.

    The edited weights are made to require grad for this pass only, so the graph runs through
    every edited module and a lower module's output gradient includes the paths through the
    modules above it. The weights' own gradients are not kept.
    """
    mask = batch.target_mask if mask is None else mask
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def capture(_module, args, output):
            inputs[name] = args[0].detach()
            outputs[name] = output
        return capture

    handles = [model.get_submodule(m.name).register_forward_hook(hook(m.name)) for m in modules]
    weights = [model.get_parameter(m.parameter) for m in modules]
    flags = [w.requires_grad for w in weights]
    try:
        for w in weights:
            w.requires_grad_(True)
        with torch.enable_grad():
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            loss = loss_fn(logits, batch)
            names = [m.name for m in modules]
            grads = torch.autograd.grad(loss, [outputs[n] for n in names])
    finally:
        for handle in handles:
            handle.remove()
        for w, flag in zip(weights, flags):
            w.requires_grad_(flag)
    return KeysAndGrads(
        keys={n: inputs[n][mask].float() for n in names},
        grads={n: g[mask].float() for n, g in zip(names, grads)},
        groups=tuple(int(part.sum()) for part in mask.split(sub_batch or len(mask))),
    )
