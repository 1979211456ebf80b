"""Peak memory of training and editing with MEND, MALMEN and RLEdit, from shapes alone.

``editbench plan`` calls :func:`training_peak` and :func:`editing_peak` before anything is loaded:
the model's shapes come from its config (a model built on the ``meta`` device is enough,
:meth:`ModelShapes.of`), the method's from its config, the data's from the tokens per record.
Each returns a :class:`MemoryEstimate`, the bytes of every term by name; docs/hypernetworks.md
("Memory") lists the terms and the figures for Llama-3-8B.

What a term counts is what the trainer (``training.py``) and the core (``core.py``) keep alive at
their peak, tensor by tensor; ``b`` is the model's bytes per element, ``L`` the layers from the
lowest edited one to the top (activations below it are not kept: nothing there needs a gradient),
``T`` the padded tokens per record. The estimates were checked against the peak of live tensor
storages measured with ``LiveTensors`` of ``tests/live_memory.py`` (a ``TorchDispatchMode``
that counts every storage an operator returns until it is freed, the autograd engine's included)
over a whole training run and over edits on micro Llama and GPT-2 models on CPU, within 25%
(tests/test_hypernet_memory.py). Allocator caches and fragmentation on a GPU come on top; the plan
should keep a margin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ...core.models import ModelLayout
from .config import HypernetConfig
from .modules import EditedModule, select_modules
from .net import effective_rank

FLOAT32 = 4
FLOAT64 = 8
#: bytes per network parameter while training: the float32 value, its gradient, Adam's two moments
#: and the copy of the best network by validation loss (``storage.net_tensors``)
TRAINED_PARAMETER_BYTES = 5 * FLOAT32


@dataclass(frozen=True)
class ModelShapes:
    """What the memory of a hypernetwork editor depends on in the model."""

    n_parameters: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    query_size: int  # n_heads x head_dim
    kv_size: int  # n_kv_heads x head_dim (grouped-query attention keeps keys and values smaller)
    vocab_size: int
    dtype_bytes: int
    gated_mlp: bool  # gate and up projections (Llama-style) or one input projection (GPT-2, GPT-J)
    # RMSNorm, which computes in float32 (Llama-style), or LayerNorm in the model's dtype
    rms_norm: bool
    edited: tuple[tuple[int, int, int], ...]  # (layer, key_size, value_size) of each edited module

    @classmethod
    def of(
        cls, model: nn.Module, config: HypernetConfig, dtype: torch.dtype | None = None,
        modules: Sequence[EditedModule] | None = None,
    ) -> ModelShapes:
        """From a model (weights on ``meta`` will do) and the method's config (its layers and
        modules), or the edited ``modules`` themselves where a method names them otherwise
        (UltraEdit's ``module_names``)."""
        layout = ModelLayout.of(model)
        c = model.config
        hidden = getattr(c, "hidden_size", None) or c.n_embd
        inner = getattr(c, "intermediate_size", None) or getattr(c, "n_inner", None) or 4 * hidden
        heads = getattr(c, "num_attention_heads", None) or c.n_head
        kv_heads = getattr(c, "num_key_value_heads", None) or heads
        head_dim = getattr(c, "head_dim", None) or hidden // heads
        edited = []
        if modules is None:
            modules = select_modules(model, layout, config.layers, config.modules)
        for module in modules:
            layer = next(
                i
                for i in range(layout.n_layers)
                if module.name.startswith(layout.block_name(i) + ".")
            )
            edited.append((layer, module.key_size, module.value_size))
        dtype = dtype or next(model.parameters()).dtype
        return cls(n_parameters=sum(p.numel() for p in model.parameters()), hidden_size=int(hidden),
                   intermediate_size=int(inner), n_layers=layout.n_layers, n_heads=int(heads),
                   query_size=int(heads * head_dim), kv_size=int(kv_heads * head_dim),
                   vocab_size=int(c.vocab_size),
                   dtype_bytes=torch.empty((), dtype=dtype).element_size(),
                   gated_mlp=len(layout.family.mlp_in) > 1, rms_norm=hasattr(c, "rms_norm_eps"),
                   edited=tuple(edited))

    @property
    def layers_above_lowest_edited(self) -> int:
        return self.n_layers - 1 - min(layer for layer, _, _ in self.edited)

    def mlp_bytes_per_token(self) -> int:
        """What one MLP keeps for backward per token when its output needs a gradient: a gated MLP
        its gate and up projections' outputs and the activation (b·i each; the product goes into a
        frozen down projection, which keeps only its weight); GPT-2's and GPT-J's tanh GELU four
        tensors of the same size (its input and the intermediates of its formula)."""
        return (3 if self.gated_mlp else 4) * self.dtype_bytes * self.intermediate_size

    def layer_bytes_per_token(self) -> int:
        """What one whole layer keeps for backward per token: its MLP; attention's rotated query
        and key, value and output (b·query_size twice, b·kv_size twice) and a log-sum-exp per head
        (frozen projections keep no input); each of the two norms' input (float32 for RMSNorm,
        which upcasts, b for LayerNorm) and its float32 statistics."""
        b = self.dtype_bytes
        attention = b * (2 * self.query_size + 2 * self.kv_size) + FLOAT32 * self.n_heads
        norms = 2 * ((FLOAT32 if self.rms_norm else b) * self.hidden_size + 2 * FLOAT32)
        return self.mlp_bytes_per_token() + attention + norms

    def activation_bytes_per_token(self) -> int:
        """Per token, what a backward pass to the edited modules needs kept: every layer above the
        lowest edited one whole, and the lowest one's MLP where its input projections are edited.
        Below them nothing needs a gradient, so nothing is kept. (The edited modules' own inputs
        are counted where they are read.)"""
        lowest = min(layer for layer, _, _ in self.edited)
        input_projection = any(
            layer == lowest and v == self.intermediate_size for layer, _, v in self.edited
        )
        return (self.layers_above_lowest_edited * self.layer_bytes_per_token()
                + (self.mlp_bytes_per_token() if input_projection else 0))

    @property
    def edited_weight_elements(self) -> int:
        return sum(k * v for _, k, v in self.edited)


@dataclass(frozen=True)
class Workload:
    """The data's side: padded tokens per record (prompt or paraphrase and answer), answer tokens
    per record (the rows each record adds per module), the edits per batch while editing
    (``--batch-size``) and, where they differ, the padded tokens of the unrelated prompts."""

    tokens_per_record: int
    answer_tokens_per_record: int
    edit_batch: int = 1
    # the unrelated prompts'; None: tokens_per_record
    neighbour_tokens_per_record: int | None = None

    @property
    def neighbour_tokens(self) -> int:
        return self.neighbour_tokens_per_record or self.tokens_per_record

    def __post_init__(self) -> None:
        if not 0 < self.answer_tokens_per_record <= self.tokens_per_record:
            raise ValueError(
                "answer_tokens_per_record must be between 1 and tokens_per_record, got "
                f"{self.answer_tokens_per_record} and {self.tokens_per_record}"
            )


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes, term by term (docs/hypernetworks.md, "Memory")."""

    terms: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.terms.values())


def network_parameters(shapes: ModelShapes, config: HypernetConfig) -> tuple[int, int]:
    """(network parameters, normaliser elements) over the networks, one per weight shape
    (``net.EditorNet``): per block A and B (size x rank), the bias, a scale and shift per module;
    per module an edit lr and a log ridge; the normaliser's mean and m2 (float64)."""
    per_shape: dict[tuple[int, int], int] = {}
    for _, k, v in shapes.edited:
        per_shape[(k, v)] = per_shape.get((k, v), 0) + 1
    parameters = statistics = 0
    for (k, v), n_modules in per_shape.items():
        size = k + v
        rank = effective_rank(config.rank, size, config.cap_rank)
        parameters += (
            config.n_blocks * (2 * size * rank + size + 2 * n_modules * size) + 2 * n_modules
        )
        statistics += 2 * size
    return parameters, statistics


def _row_bytes_through_network(shapes: ModelShapes, config: HypernetConfig) -> int:
    """Float32 bytes the network's graph keeps per row summed over modules: the concatenated and
    normalised rows (2 x size), per block ``y A`` (rank), ``y A B + b`` and its clamp (2 x size)
    and the scaled output (size), and the update's factors (key_size + value_size)."""
    total = 0
    for _, k, v in shapes.edited:
        size = k + v
        rank = effective_rank(config.rank, size, config.cap_rank)
        total += FLOAT32 * (2 * size + config.n_blocks * (rank + 3 * size) + size)
    return total


def _logit_bytes(shapes: ModelShapes) -> int:
    """Per position and vocabulary entry, while a loss on the logits is back-propagated: the logits
    (b), the float32 log-probabilities the loss keeps and, in the backward pass, their gradient and
    the float32 logits' gradient, and the cast back to b when the model is not float32."""
    b = shapes.dtype_bytes
    return b + 3 * FLOAT32 + (b if b < FLOAT32 else 0)


def _read_terms(
    shapes: ModelShapes, records: int, tokens: int, answer_tokens: int
) -> dict[str, int]:
    """Reading one batch's keys and output gradients (``modules.keys_and_grads``): a forward and
    backward pass through the layers above the lowest edited module
    (``activation_bytes_per_token``), the logits of every position (``_logit_bytes``), and the rows
    kept: each module's input (b x key_size per token) until the rows are cut out, and the float32
    rows (key_size + value_size per answer token)."""
    b, vocab = shapes.dtype_bytes, shapes.vocab_size
    positions = records * tokens
    rows = records * answer_tokens
    return {
        "read: activations": positions * shapes.activation_bytes_per_token(),
        "read: logits, log-probabilities and their gradients": (
            positions * vocab * _logit_bytes(shapes)
        ),
        "read: module inputs, output gradients and rows": positions * b * (
            sum(k for _, k in {(layer, k) for layer, k, _ in shapes.edited})
            + sum(v for _, _, v in shapes.edited))
        + sum(rows * FLOAT32 * (k + v) for _, k, v in shapes.edited),
    }


#: Share of the free memory (GPU, or the host's for a CPU run) a turn read in one pass may take:
#: the formulas are within 25% of the live tensors, and allocator caches come on top.
READ_SHARE = 0.5


def free_bytes(device: torch.device) -> int:
    """Bytes free on the run's device now: the GPU's, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def read_bytes(shapes: ModelShapes, records: int, tokens: int, answer_tokens: int) -> int:
    """Peak bytes of one read of ``records`` records (``_read_terms``), the weights aside."""
    return sum(_read_terms(shapes, records, tokens, answer_tokens).values())


def records_per_read(config, turn: int, whole_turn_fits: bool) -> int:
    """Records in one forward and backward pass of a turn's read (``EditorCore.read_keys_and_grads``
    while editing): the whole turn where it fits, else one release sub-batch at a time. The
    sub-batches' rows and gradients are the same either way (each keeps its own token-mean loss,
    summed over the pass), so memory alone decides."""
    if not config.sub_batch or config.sub_batch >= turn or whole_turn_fits:
        return turn
    return config.sub_batch


def training_peak(
    shapes: ModelShapes, config: HypernetConfig, workload: Workload
) -> MemoryEstimate:
    """Peak bytes of ``Trainer.run``: the deepest step of a sequence, while its loss is
    back-propagated.

    - weights: the model, ``n_parameters x b``; pristine: the trainer's copy of the edited weights
      (``Trainer.pristine``) to reset after each sequence.
    - networks: their parameters, at 20 bytes each (value, gradient, Adam's moments, best copy),
      and the normalisers' float64 statistics.
    - window graphs: the ``depth`` steps of the back-tracking window each keep their network graph,
      ``train_batch x answer tokens`` rows through the network per module
      (``_row_bytes_through_network``).
    - step loss: the loss is back-propagated one window batch at a time (``Trainer.step_loss``), so
      one batch's paraphrases (``train_batch x paraphrases_per_edit`` records) or unrelated
      prompts (``x neighbours_per_edit``), whichever is larger, are forward with gradient at once:
      activations per token (``ModelShapes.activation_bytes_per_token``), per edited module its
      input in float32 and its product with every update's left factor (``routed_updates``), and
      the logits with their gradients (``_logit_bytes``); beside them the reference logits of all
      the window's unrelated prompts (b x vocab per position), alive through the step.
    - the step's own read of keys and gradients (its rows stay alive for the step), by ``sub_batch``
      records at a time when set.
    """
    b, vocab = shapes.dtype_bytes, shapes.vocab_size
    tokens, answer = workload.tokens_per_record, workload.answer_tokens_per_record
    parameters, statistics = network_parameters(shapes, config)
    depth = config.depth
    gen_positions = config.train_batch * config.paraphrases_per_edit * tokens  # one window batch
    loc_positions = config.train_batch * config.neighbours_per_edit * workload.neighbour_tokens
    rows_per_step = config.train_batch * answer
    window_rows = rows_per_step * (depth if config.backtrack_grad else 1)
    hook_bytes = sum(FLOAT32 * (k + window_rows) for _, k, _ in shapes.edited)
    read = _read_terms(shapes, config.sub_batch or config.train_batch, tokens, answer)
    rows_kept = sum(rows_per_step * FLOAT32 * (k + v) for _, k, v in shapes.edited)
    terms = {
        "weights": shapes.n_parameters * b,
        "pristine edited weights": shapes.edited_weight_elements * b,
        "networks (value, gradient, Adam, best copy)": (
            parameters * TRAINED_PARAMETER_BYTES + statistics * FLOAT64
        ),
        "window graphs": depth * rows_per_step * _row_bytes_through_network(shapes, config),
        "step loss: activations": max(gen_positions, loc_positions) * (
            shapes.activation_bytes_per_token() + hook_bytes),
        "step loss: logits": depth * loc_positions * vocab * b
        + max(gen_positions, loc_positions) * vocab * _logit_bytes(shapes),
        "step: keys and gradients": rows_kept,
    }
    # the read happens before this step's network graph and loss exist: the larger phase counts
    graph = rows_per_step * _row_bytes_through_network(shapes, config)
    step_phase = sum(v for k, v in terms.items() if k.startswith("step")) + depth * graph
    read_phase = sum(read.values()) + (depth - 1) * graph
    if read_phase > step_phase:
        for key in [k for k in terms if k.startswith("step")]:
            del terms[key]
        terms["window graphs"] = (depth - 1) * graph
        terms.update(read)
    return MemoryEstimate(terms)


def editing_peak(shapes: ModelShapes, config: HypernetConfig, workload: Workload,
                 read_records: int | None = None) -> MemoryEstimate:
    """Peak bytes of ``apply`` on one batch of ``edit_batch`` edits with a trained editor.

    - weights, and the networks' float32 parameters and float64 statistics (no gradient, no Adam);
    - the read of the batch's keys and gradients (``_read_terms``), ``read_records`` records at a
      time (``records_per_read``: the whole batch where it fits the device; by default
      ``sub_batch`` when set, the bound that holds on any device);
    - the updates: every module's factors (rows x (key_size + value_size), float32), and one
      module at a time made dense in float32 and cast to the weight's dtype
      (``EditorCore.apply_shifts``).
    """
    b = shapes.dtype_bytes
    tokens, answer = workload.tokens_per_record, workload.answer_tokens_per_record
    parameters, statistics = network_parameters(shapes, config)
    rows = workload.edit_batch * answer
    if read_records is None:
        read_records = records_per_read(config, workload.edit_batch, False)
    read = _read_terms(shapes, read_records, tokens, answer)
    largest = max(k * v for _, k, v in shapes.edited)
    update_phase = (sum(rows * FLOAT32 * 2 * (k + v) for _, k, v in shapes.edited)
                    + largest * (FLOAT32 + b))
    terms = {
        "weights": shapes.n_parameters * b,
        "networks": parameters * FLOAT32 + statistics * FLOAT64,
    }
    if sum(read.values()) >= update_phase:
        terms.update(read)
    else:
        terms["updates: factors and one dense module"] = update_phase
    return MemoryEstimate(terms)
