"""MEMOIR (Wang, Qin, Dimitriadis, Favero, Frossard, NeurIPS 2025; arXiv 2506.07899), read against
its release (qym7/MEMOIR, ``easyeditor/models/memoir``, ``hparams/MEMOIR/llama3-8b.yaml``).

The model's weights never change. Beside one MLP output (down) projection ``W0`` sits a residual
memory ``Wm`` of the same shape, zero at the start; the layer computes ``W0 a + Wm (M ⊙ a)``, with
``M`` a sparse mask over the projection's input ``a``. The mask is TopHash (paper §3.2): the
prompt's feature (the mean of ``a`` over the prompt's tokens less a background mean over unrelated
prompts, ``mean_decentered``) gives the indices of its ``k`` largest magnitudes, which a fixed
random permutation of the ``D`` input indices then maps to the mask's ``k`` columns. An edit trains
``Wm`` through the edit's rows (the prompt and its template-prefixed copies, WISE's) with the mask
of the bare prompt at every position, so its gradient lands in those ``k`` columns only; SGD with
weight decay 1e-5, the gradient clipped to norm 1, ``n_iter`` steps or the release's early stop.
The mask is stored. At inference (paper §3.3) a prompt's mask is compared with the stored ones:
the largest overlap (shared columns over ``k``) below ``threshold`` leaves the layer's output
untouched; at or above it, the memory is read through the best-matching edit's mask, at every
position of the sequence.

Where the release knows the prompt's end it is told (``last_prompt_token_loc_inference``). A
hook inside the model is not: editbench learns the prompts it scores and generates from through
``scoring_prompt`` (``rewrites_prompts``, returning each prompt unchanged) and takes as a row's
prompt the longest learnt prompt its tokens begin with; a row with none counts whole as prompt.
On a cached decoding step each row keeps its prompt's decision (rows matched in order by prompt
length when the decoder has dropped finished ones). See docs/memory-and-retrieval.md.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..core.method import METHODS, MethodConfig
from ..core.records import EditRecord
from ._layer_memory import LayerMemoryMethod, context_templates, converged
from .answer_positions import narrowed
from .objectives import masked_target_nll

log = logging.getLogger(__name__)

#: the release's k against Llama-3-8B's 14,336 down-projection inputs: a model without a ``top_k``
#: keeps the same share of its own width
RELEASE_SHARE = 4096 / 14336
FEATURES = ("last", "mean", "mean_decentered")


@dataclass(frozen=True)
class MemoirConfig(MethodConfig):
    layer: int | None = None  # None: 27/32 of the depth (the release's Llama-3-8B layer 27)
    lr: float = 1.0
    n_iter: int = 30
    #: active columns per edit; None: ``RELEASE_SHARE`` of the projection's input width
    top_k: int | None = None
    #: the overlap share at which the memory reads (0.4 ZsRE, 0.9 hallucination in the README)
    threshold: float = 0.4
    feature: str = "mean_decentered"
    #: unrelated prompts whose mean feature is the background (the release loads 100)
    background_samples: int = 100
    weight_decay: float = 1e-5
    max_grad_norm: float = 1.0
    #: template-prefixed copies of the prompt trained beside it (the release's batch: 1 + 10)
    n_templates: int = 10

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.n_iter < 1 or self.max_grad_norm <= 0 or self.weight_decay < 0:
            raise ValueError("lr and max_grad_norm must be positive, weight_decay at least 0 and "
                             "n_iter at least 1")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be a share in (0, 1], got {self.threshold}")
        if self.feature not in FEATURES:
            raise ValueError(f"feature must be one of {', '.join(FEATURES)}, got {self.feature!r}")
        if self.n_templates not in range(0, 11) or self.background_samples < 0:
            raise ValueError("n_templates must be 0 to 10 and background_samples at least 0")


#: qym7/MEMOIR hparams/MEMOIR/llama3-8b.yaml (the release's only file) and its README's
#: hallucination run; Mistral-7B (paper §4, no file) shares Llama-3-8B's shape (32 layers, 14,336)
PRESETS = {
    "llama-3-8b": {"layer": 27, "n_iter": 30, "top_k": 4096, "threshold": 0.4},
    "mistral-7b": {"layer": 27, "n_iter": 30, "top_k": 4096, "threshold": 0.4},
    "hallucination": {"threshold": 0.9},
}


def top_hash(feature: torch.Tensor, k: int, permutation: torch.Tensor) -> torch.Tensor:
    """TopHash (paper Eq. 4-5, release ``TopHasher.get_active_indices``): the boolean mask of the
    columns the ``k`` largest magnitudes of ``feature`` (..., D) land on under ``permutation``."""
    indices = permutation.to(feature.device)[feature.abs().topk(k, dim=-1).indices]
    return torch.zeros_like(feature, dtype=torch.bool).scatter_(-1, indices, True)


def best_match(masks: torch.Tensor, stored: torch.Tensor, k: int,
               threshold: float) -> torch.Tensor:
    """Per query mask (n, D), the stored mask (m, D) it reads the memory through, -1 for none: the
    largest overlap share, at or above ``threshold`` (release ``new_weight_forward``, the first of
    equal overlaps as ``topk`` picks)."""
    if not len(stored):
        return torch.full((len(masks),), -1, dtype=torch.long, device=masks.device)
    share = masks.float() @ stored.to(masks.device).float().T / k
    best, index = share.max(1)
    return torch.where(best >= threshold, index, -1)


@METHODS.register("memoir")
class Memoir(LayerMemoryMethod):
    name = "memoir"
    description = ("zero-initialised residual memory beside an MLP down projection, written "
                   "through TopHash masks, read when a prompt's mask overlaps (Wang et al. 2025)")
    Config = MemoirConfig
    presets = PRESETS
    preset_checkpoints = {
        "llama-3-8b": "meta-llama/Meta-Llama-3-8B-Instruct (hparams/MEMOIR/llama3-8b.yaml)"
    }
    rewrites_prompts = True  # to learn where the scored prompts end; each is returned unchanged

    def __init__(self, config, context) -> None:
        super().__init__(config, context)
        self._handles: list = []
        self._prompts: dict[int, set[tuple[int, ...]]] = {}  # learnt prompts' ids, by length
        self._call: dict = {}  # the backbone call's ids, mask and positions
        self._held: list[tuple[int, int]] = []  # a generation's rows: (prompt length, choice)
        self._width = 0  # the generation's prefill width
        self._edit_mask: torch.Tensor | None = None  # the mask of the edit being trained

    @classmethod
    def left_out_of_default_run(cls) -> str:
        """Why the default run leaves it out: on the pocket model its 200 edits (30 steps on 11
        rows each, the release's) and their checkpoints take about two minutes on a loaded
        machine (docs/benchmarks.md), far over the ~10 s the default run's budget leaves a row."""
        return ("memoir (about 2 min on the pocket model, over the default run's budget; run it "
                "with --methods memoir)")

    # -- what ``editbench plan`` counts ----------------------------------------------------------
    def rows_per_edit(self) -> int:
        return 1 + self.config.n_templates

    def row_tokens(self, run) -> int:
        return run.tokens_per_record + 10

    def memory_bytes(self, shape, run, out_in) -> int:
        """The float32 memory, and a boolean mask of the input width per edit."""
        return out_in[0] * out_in[1] * 4 + run.edits * out_in[1]

    def trained_bytes(self, shape, out_in) -> int:
        return 2 * out_in[0] * out_in[1] * 4  # the memory's gradient and SGD's working copy

    # -- setup -----------------------------------------------------------------------------------
    def prepare(self) -> None:
        if self._handles:
            return
        weight = self.hooked_module().weight
        conv1d = not isinstance(self.hooked_module(), nn.Linear)  # GPT-2 stores (in, out)
        self.width = weight.shape[0] if conv1d else weight.shape[1]
        out = weight.shape[1] if conv1d else weight.shape[0]
        self.k = min(self.width, self.config.top_k or max(1, round(RELEASE_SHARE * self.width)))
        self.memory = torch.zeros(out, self.width, device=self.ctx.device)  # Wm, (out, in)
        self.masks = torch.zeros(0, self.width, dtype=torch.bool)
        self.permutation = torch.randperm(self.width, generator=self.ctx.generator)
        self.background = self._background()
        self.templates = ["{}"] + context_templates(self.ctx, self.config.n_templates)
        backbone = getattr(self.ctx.model, "base_model", None) or self.ctx.model
        self._handles = [
            backbone.register_forward_pre_hook(self._read_call, with_kwargs=True),
            # the KV cache a prompts' pass creates comes back in its output
            backbone.register_forward_hook(
                lambda module, args, output: self._follow_row_selection(
                    getattr(output, "past_key_values", None))),
            self.hooked_module().register_forward_hook(self._hook),
        ]

    def _background(self) -> torch.Tensor:
        """The mean prompt feature of up to ``background_samples`` train-split prompts, seeded (the
        release's saved features of unrelated prompts, ``dir_background_features``)."""
        zero = torch.zeros(self.width)
        if self.config.feature != "mean_decentered" or not self.config.background_samples:
            return zero
        try:
            train = self.ctx.train_records()
        except (ValueError, KeyError, FileNotFoundError):
            train = []
        if not train:
            log.warning("memoir: the task has no train split, so the prompt features are not "
                        "de-centred (feature=mean_decentered falls back to mean)")
            return zero
        order = torch.randperm(len(train), generator=self.ctx.generator)
        prompts = [train[int(i)].prompt for i in order[: self.config.background_samples]]
        return torch.stack([self.prompt_input(p).mean(0) for p in prompts]).mean(0).cpu()

    def prompt_input(self, prompt: str) -> torch.Tensor:
        """The hooked projection's input at each of the prompt's tokens (positions, D), float32."""
        captured: list[torch.Tensor] = []
        handle = self.hooked_module().register_forward_pre_hook(
            lambda _, args: captured.append(args[0][0].float()))
        try:
            with torch.no_grad():
                self.ctx.model(input_ids=torch.tensor([self.ctx.encoder.encode_prompt(prompt)],
                                                      device=self.ctx.device), use_cache=False)
        finally:
            handle.remove()
        return captured[0]

    def feature(self, prompt_inputs: torch.Tensor) -> torch.Tensor:
        """The release's ``aggregate_prompt_features`` over one prompt's inputs (positions, D)."""
        if self.config.feature == "last":
            return prompt_inputs[-1].float()
        return prompt_inputs.float().mean(0) - self.background.to(prompt_inputs.device)

    def mask_of(self, prompt_inputs: torch.Tensor) -> torch.Tensor:
        return top_hash(self.feature(prompt_inputs), self.k, self.permutation)

    def scoring_prompt(self, prompt: str) -> str:
        ids = tuple(self.ctx.encoder.encode_prompt(prompt))
        self._prompts.setdefault(len(ids), set()).add(ids)
        return prompt

    # -- the forward computation -----------------------------------------------------------------
    def _read_call(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._call = {"ids": ids, "mask": kwargs.get("attention_mask"),
                      "positions": kwargs.get("position_ids")}
        self._follow_row_selection(kwargs.get("past_key_values", kwargs.get("cache")))

    def idle_while_editing(self) -> list[int]:
        """The two hooks on the model: they keep each call's tokens and mask for routing, and
        follow a decoder's KV cache; an edit's training reads neither (every row takes the edit's
        own mask, and its passes keep no cache), so its passes may call the blocks directly."""
        return [handle.id for handle in self._handles[:2]]

    def _follow_row_selection(self, cache) -> None:
        """When a decoder drops finished rows from its KV cache (``batch_select_indices``, as
        ``core/generate.py`` does), drop their held decisions too, so every row keeps its own
        prompt's: two prompts of one length could not be told apart afterwards."""
        if getattr(cache, "batch_select_indices", None) is None or \
                getattr(cache, "_memoir_follows_rows", False):
            return
        # through a weak reference: the cache holding a closure that holds the cache would be a
        # cycle, and every decoding batch's KV cache would wait for the garbage collector (found
        # by the cost check: MEMOIR's measured peak 4x its plan)
        owner, select = weakref.ref(cache), type(cache).batch_select_indices

        def selecting(indices: torch.Tensor) -> None:
            select(owner(), indices)
            kept = indices.tolist()
            if kept and max(kept) < len(self._held):
                self._held = [self._held[i] for i in kept]

        cache.batch_select_indices = selecting
        cache._memoir_follows_rows = True

    def _prompt_span(self, row: int, x: torch.Tensor) -> tuple[int, int]:
        """The first and last prompt positions of ``row``: the longest learnt prompt its real
        tokens begin with, or all of them."""
        ids, mask = self._call.get("ids"), self._call.get("mask")
        width = x.shape[1]
        real = (mask[row, -width:].bool() if mask is not None and mask.shape[0] == x.shape[0]
                else torch.ones(width, dtype=torch.bool, device=x.device))
        where = real.nonzero().squeeze(1)
        start, end = int(where[0]), int(where[-1])
        if ids is not None and tuple(ids.shape) == (x.shape[0], width):
            tokens = tuple(ids[row, start:end + 1].tolist())
            for length in sorted(self._prompts, reverse=True):
                if length <= len(tokens) and tokens[:length] in self._prompts[length]:
                    return start, start + length - 1
        return start, end

    def _choices(self, x: torch.Tensor) -> torch.Tensor:
        """Per row, the stored edit whose mask it reads the memory through, -1 for none."""
        mask = self._call.get("mask")
        if x.shape[1] == 1 and mask is not None and mask.shape[1] > 1 and self._held:
            return self._held_choices(x)
        spans = [self._prompt_span(r, x) for r in range(x.shape[0])]
        masks = torch.stack([self.mask_of(x[r, a:b + 1]) for r, (a, b) in enumerate(spans)])
        choice = best_match(masks, self.masks, self.k, self.config.threshold)
        self._held = [(b - a + 1, int(c)) for (a, b), c in zip(spans, choice)]
        self._width = x.shape[1]
        return choice

    def _held_choices(self, x: torch.Tensor) -> torch.Tensor:
        """A cached decoding step: each row's prompt decision. Rows the decoder dropped are found
        by matching the remaining rows' prompt lengths (position less steps taken) in order."""
        if len(self._held) == x.shape[0]:
            return torch.tensor([c for _, c in self._held], device=x.device)
        steps = self._call["mask"].shape[1] - self._width - 1
        positions = self._call.get("positions")
        lengths = ([int(p) - steps for p in positions[:, -1]] if positions is not None
                   else [-1] * x.shape[0])
        kept, held = [], iter(self._held)
        for length in lengths:
            for prompt_length, choice in held:
                if prompt_length == length:
                    kept.append((prompt_length, choice))
                    break
            else:
                kept.append((length, -1))
        self._held = kept
        return torch.tensor([c for _, c in kept], device=x.device)

    def residual(self, x: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """``Wm (M ⊙ a)`` at every position, in the input's dtype."""
        return (x * columns.to(x.dtype)) @ self.memory.to(x.dtype).T

    def _hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        x = args[0]
        if self._edit_mask is not None:  # training: the edit's mask on every row
            return output + self.residual(x, self._edit_mask.to(x.device))
        if not len(self.masks):
            return None
        choice = self._choices(x)
        if not bool((choice >= 0).any()):
            return None  # below the threshold: the layer's own output, untouched
        columns = self.masks.to(x.device)[choice.clamp_min(0)] & (choice >= 0).unsqueeze(1)
        return output + self.residual(x, columns.unsqueeze(1))

    def routes(self, texts: Sequence[str]) -> list[int]:
        """The stored edit each prompt reads the memory through, -1 for none (tests, inspection)."""
        masks = torch.stack([self.mask_of(self.prompt_input(t)) for t in texts])
        return best_match(masks, self.masks, self.k, self.config.threshold).tolist()

    # -- editing ---------------------------------------------------------------------------------
    def apply(self, batch: Sequence[EditRecord]) -> None:
        for record in batch:
            self._edit(record)

    def _edit(self, record: EditRecord) -> None:
        config: MemoirConfig = self.config  # type: ignore[assignment]
        mask = self.mask_of(self.prompt_input(record.prompt))
        encoder = self.ctx.encoder
        pairs = [(template.format(record.prompt), record.target_new) for template in self.templates]
        batch = encoder.collate(encoder.encode_many(pairs)).to(self.ctx.device)
        memory = nn.Parameter(self.memory)
        optimizer = torch.optim.SGD([memory], lr=config.lr, weight_decay=config.weight_decay)
        self.memory, self._edit_mask, losses = memory, mask, []
        lower = self.lower_blocks()  # the rows below the layer, computed once per edit
        answers = narrowed(batch)  # the head where the loss reads it (``answer_positions.py``)
        try:
            for _ in range(config.n_iter):
                logits = self.step_logits(lower, batch, answers)
                loss = masked_target_nll(logits, answers.batch)
                losses.append(loss.item())
                if converged(losses, on_previous=True):
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(memory, config.max_grad_norm)
                optimizer.step()
        finally:
            self.memory, self._edit_mask = memory.detach(), None
        if not any(torch.equal(mask.cpu(), m) for m in self.masks):  # the release stores it once
            self.masks = torch.cat([self.masks, mask.cpu()[None]])

    # -- lifelong state --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"memory": self.memory, "masks": self.masks, "permutation": self.permutation,
                "background": self.background}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Refill the memory, masks and hash; the hooks ``prepare`` installed read them."""
        self.prepare()
        self.memory = state["memory"].to(self.ctx.device, torch.float32)
        self.masks = state["masks"].bool().cpu()
        self.permutation = state["permutation"].long()
        self.background = state["background"].float()
