"""What a run will cost, before anything is loaded: the formulas behind ``editbench plan``.

A model is described by its config alone (:class:`ModelShape`: the model is built on the ``meta``
device, which holds shapes and names but no memory), a run by its sizes (:class:`RunShape`). Each
method states its own phases (``EditMethod.cost``) from the building blocks here; the evaluation
phase is the same for every method and is added by :func:`evaluation_cost`.

Memory is in bytes on the device that holds the model, for one method at a time (the runner edits
one fresh copy after another): what stays resident (weights, float32 master copies, the method's
lifelong state) plus the largest transient of each phase. Time is the phase's floating-point work
over the device's sustained rate (``RunShape.flops_per_second``); the work is counted as
``2 x parameters x tokens`` per forward pass and twice that per backward pass (the usual dense
transformer estimate, Kaplan et al. 2020), which ignores attention's quadratic term (prompts here
are short) and every overhead, so times are lower bounds of the right order, not promises.

The activation coefficients below were fitted to measured peaks of micro models of each
architecture (``tests/test_costs.py`` checks the estimates stay within 25% of the measurement; the
GPU figures are in docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .models import ModelLayout, weight_as_out_in

GiB = 1024**3

#: values held per token per transformer block by a forward pass that keeps its activations for a
#: backward pass, when only a few edited weights need gradients (every other weight is frozen, so
#: a projection keeps no input for its weight's gradient): about 6 hidden-sized tensors (norm
#: inputs, q/k/v and the attention output) and 3 intermediate-sized ones (the activation's input,
#: both factors of the gated product)
SAVED_HIDDEN, SAVED_INTERMEDIATE = 6, 3
#: the per-token temporaries of a forward pass without gradients, at its widest (inside the MLP:
#: gate, up, activation and product beside the residual stream and the block's norms)
TEMP_HIDDEN, TEMP_INTERMEDIATE = 8, 4
#: the share of a scored batch's tokens that are answer tokens (the probe takes logits only there)
ANSWER_SHARE = 0.25
#: the HF probe's padded tokens per forward pass (``HFProbe.max_tokens``)
PROBE_TOKENS = 8192


@dataclass(frozen=True)
class ModelShape:
    """A model as its config describes it; ``meta`` is the model built on the meta device."""

    label: str
    model_type: str
    architecture: str | None
    n_params: int
    n_layers: int
    hidden: int
    intermediate: int
    vocab: int
    dtype: torch.dtype
    meta: torch.nn.Module = field(repr=False, compare=False)
    heads: int = 0
    max_positions: int = 2048
    #: eager attention materialises (heads x length x length) scores per sequence (Gemma-2 uses it)
    eager_attention: bool = False
    #: the MLP's activation; GPT-2's and GPT-J's ``gelu_new`` is written in Python, one temporary
    #: per step
    activation: str = ""

    @property
    def activation_temporaries(self) -> int:
        """Intermediate-sized values an MLP activation holds at once without gradients."""
        return 4 if self.activation == "gelu_new" else 2

    @property
    def dtype_bytes(self) -> int:
        return torch.finfo(self.dtype).bits // 8

    @property
    def layout(self) -> ModelLayout:
        return ModelLayout.of(self.meta)

    def param_numel(self, name: str) -> int:
        return self.meta.get_parameter(name).numel()

    def param_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.meta.get_parameter(name).shape)

    def out_in(self, module: str) -> tuple[int, int]:
        """A linear module's weight as (out_features, in_features), whatever its storage."""
        out, in_ = weight_as_out_in(self.meta.get_submodule(module),
                                    self.layout.family.conv1d).shape
        return int(out), int(in_)

    def params_up_to(self, layer: int) -> int:
        """Parameters a forward pass uses to reach the output of ``layer`` (embeddings included)."""
        per_layer = sum(p.numel() for n, p in self.meta.named_parameters()
                        if self.layout.block_name(0) + "." in n)
        embed = self.meta.get_input_embeddings().weight.numel()
        return embed + per_layer * (layer + 1)

    @classmethod
    def from_config(cls, config, dtype: torch.dtype, label: str = "") -> ModelShape:
        """Build on the meta device: every parameter's name and shape, no memory."""
        from transformers import AutoModelForCausalLM

        from .architectures import recognise

        with torch.device("meta"):
            meta = AutoModelForCausalLM.from_config(config, dtype=dtype)
        text = getattr(config, "get_text_config", lambda: config)()
        hidden = getattr(text, "hidden_size", None) or text.n_embd
        inner = (getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None)
                 or 4 * hidden)
        n_layers = getattr(text, "num_hidden_layers", None) or text.n_layer
        n_params = sum(p.numel() for p in meta.parameters())
        heads = getattr(text, "num_attention_heads", None) or text.n_head
        eager = getattr(meta.config, "_attn_implementation", "") == "eager"
        positions = (getattr(text, "max_position_embeddings", None)
                     or getattr(text, "n_positions", None) or 2048)
        activation = (getattr(text, "hidden_act", None) or getattr(text, "hidden_activation", None)
                      or getattr(text, "activation_function", None) or "")
        return cls(label or getattr(config, "_name_or_path", "") or config.model_type,
                   config.model_type, recognise(config), n_params, int(n_layers), int(hidden),
                   int(inner), int(text.vocab_size), dtype, meta, int(heads), int(positions), eager,
                   str(activation))


@dataclass(frozen=True)
class RunShape:
    """The sizes of a run that its cost depends on."""

    edits: int
    batch_size: int
    #: evaluated records summed over checkpoints (each checkpoint scores every edit so far, or a
    #: sample)
    scored_records: int
    #: pairs scored per evaluated record (the edit, its paraphrases, its neighbours)
    pairs_per_record: int = 3
    #: prompt plus answer tokens of a record (the task's mean)
    tokens_per_record: int = 32
    train_records: int = 0
    generated: bool = True
    gen_max_tokens: int = 16
    flops_per_second: float = 4e14  # sustained: about 40% of an H100's dense bf16 rate
    device_bytes: int = 80 * GiB
    master_copies: bool = True


@dataclass(frozen=True)
class PhaseCost:
    phase: str  # statistics | training | editing | evaluation
    transient_bytes: int
    flops: float
    note: str = ""


@dataclass(frozen=True)
class MethodCost:
    """One method's resident memory and its phases."""

    method: str
    resident_bytes: int  # weights, master copies, lifelong state: held from the first edit on
    phases: tuple[PhaseCost, ...]
    note: str = ""
    #: the scored prompts' length against the run's (a method that adds text to them, e.g.
    #: retrieval)
    evaluation_tokens: float = 1.0
    #: lifelong state kept in host memory, not on the device (MEMIT's and AlphaEdit's key
    #: statistics, moved to the device one layer at a time for a solve): no part of the device's
    #: peak; on a CPU run it shares the one memory, and the run's check adds it
    host_bytes: int = 0

    def peak(self, phase: PhaseCost, host_shared: bool = False) -> int:
        """The device's peak in ``phase``; ``host_shared``: the device is the CPU, whose one memory
        also holds ``host_bytes``."""
        return self.resident_bytes + phase.transient_bytes + (self.host_bytes if host_shared else 0)

    @property
    def peak_bytes(self) -> int:
        return max(self.peak(p) for p in self.phases)

    def seconds(self, phase: PhaseCost, run: RunShape) -> float:
        return phase.flops / run.flops_per_second

    def fits(self, run: RunShape) -> bool:
        return self.peak_bytes <= run.device_bytes


# -- building blocks -------------------------------------------------------------------------------
def weights_bytes(shape: ModelShape) -> int:
    return shape.n_params * shape.dtype_bytes


def master_copy_bytes(shape: ModelShape, run: RunShape, edited: Sequence[str]) -> int:
    """Float32 copies of the edited tensors (``core/precision.py``) when the model is bf16/fp16."""
    if not run.master_copies or shape.dtype_bytes >= 4:
        return 0
    return 4 * sum(shape.param_numel(name) for name in edited)


def logits_bytes(shape: ModelShape, tokens: int) -> int:
    """The logits in the model's dtype, their float32 copy and its log-softmax."""
    return tokens * shape.vocab * (shape.dtype_bytes + 8)


def attention_bytes(shape: ModelShape, tokens: int, length: int, copies: int = 1) -> int:
    """Eager attention's ``copies`` of the scores (one alive at a time without gradients; the
    scores, their soft-capped, masked and softmaxed versions kept for a backward pass), for
    ``tokens`` tokens in sequences of ``length``; zero for the fused kernels (SDPA, flash)."""
    return (copies * tokens * shape.heads * length * shape.dtype_bytes
            if shape.eager_attention else 0)


def inference_bytes(shape: ModelShape, tokens: int, with_logits: bool = True,
                    length: int = 64) -> int:
    """The transient of a forward pass without gradients over ``tokens`` padded tokens, in
    sequences of ``length``."""
    block = (tokens * (TEMP_HIDDEN * shape.hidden + TEMP_INTERMEDIATE * shape.intermediate)
             * shape.dtype_bytes)
    block += attention_bytes(shape, tokens, length)
    return block + (logits_bytes(shape, tokens) if with_logits else 0)


def backward_bytes(shape: ModelShape, tokens: int, blocks: int, with_logits: bool = True,
                   length: int = 32) -> int:
    """The transient of a forward and backward pass over ``tokens`` tokens (sequences of ``length``)
    whose gradient reaches back through ``blocks`` transformer blocks (only those keep
    activations)."""
    saved = tokens * blocks * (SAVED_HIDDEN * shape.hidden
                               + SAVED_INTERMEDIATE * shape.intermediate)
    return (saved * shape.dtype_bytes + blocks * attention_bytes(shape, tokens, length, copies=5)
            + (2 * logits_bytes(shape, tokens) if with_logits else 0))


def forward_flops(shape: ModelShape, tokens: int, params: int | None = None) -> float:
    return 2.0 * (params if params is not None else shape.n_params) * tokens


def evaluation_cost(shape: ModelShape, run: RunShape) -> PhaseCost:
    """Scoring (teacher-forced, padded batches of ``PROBE_TOKENS``) and greedy generation of the
    answers (a key-value cache of the batch's prompts and answers) at every checkpoint."""
    pairs = run.scored_records * run.pairs_per_record
    tokens = pairs * run.tokens_per_record
    flops = forward_flops(shape, tokens)
    transient = inference_bytes(shape, PROBE_TOKENS, False, run.tokens_per_record) + logits_bytes(
        shape, int(PROBE_TOKENS * ANSWER_SHARE))
    if run.generated:  # one pass over each prompt, then one token at a time from the cache
        flops += forward_flops(shape, pairs * (run.tokens_per_record + run.gen_max_tokens))
        kv_dim = shape.hidden  # an upper bound: grouped-query attention keeps less
        cache = PROBE_TOKENS * shape.n_layers * 2 * kv_dim * shape.dtype_bytes
        transient = max(transient, cache + inference_bytes(shape, PROBE_TOKENS // 8))
    return PhaseCost("evaluation", transient, flops, f"{tokens:,} scored tokens")
