"""What GRACE and WISE share: a memory beside one MLP output projection, read by a forward hook.

Neither changes a weight (``edited_parameters`` is empty: snapshots carry their state instead), and
a hook is a change of the forward computation a vLLM engine cannot run, so both are scored with HF.
Their configs have a ``layer`` field; ``None`` falls at 27/32 of the depth, the layer EasyEdit's
Llama-2-7B files give both (``hparams/GRACE/llama-7b.yaml``, ``hparams/WISE/llama-7b.yaml``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.costs import (
    MethodCost,
    ModelShape,
    PhaseCost,
    RunShape,
    backward_bytes,
    forward_flops,
    weights_bytes,
)
from ..core.method import EditContext, EditMethod
from ..core.tokenize import PairBatch
from .answer_positions import AnswerPositions
from .lower_blocks import LowerBlocks

#: the starts of EasyEdit's greedy prefixes (WISE ``utils.py:426-450``; MEMOIR trains on the same)
TEMPLATE_STARTS = ("I", "You", "Because", "Yes", "Q: ")


def context_templates(ctx: EditContext, n_templates: int) -> list[str]:
    """Greedy prefixes of 5 and 10 tokens from EasyEdit's five starts, made by the unedited model,
    each followed by a space and the prompt (``utils.py:447``: ``prefix + ' {}'``; editbench joined
    them with ". " before 2026-12-05). WISE and MEMOIR train an edit on these prefixed copies."""
    wanted = [(start, length) for length in (5, 10) for start in TEMPLATE_STARTS][:n_templates]
    if not wanted:
        return []
    encoder, model = ctx.encoder, ctx.model
    templates = []
    with torch.no_grad():
        for start, length in wanted:
            ids = torch.tensor([encoder.encode_text(start)], device=ctx.device)
            for _ in range(length):
                ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], 1)
            text = (
                ctx.tokenizer.decode(ids[0], skip_special_tokens=True)
                .replace("{", "")
                .replace("}", "")
            )
            templates.append(text.strip() + " {}")
    return templates


def converged(losses, on_previous: bool = False) -> bool:
    """EasyEdit's early stop (WISE ``utils.py:400-401``, MEMOIR's ``EarlyStopMeter``): the loss
    below 0.02 and moved less than 1e-4 since the step before. ``losses`` ends with the current
    step's; ``on_previous`` tests the two before it instead, as the releases do (their meter is
    read before this step's loss enters)."""
    pair = losses[-3:-1] if on_previous else losses[-2:]
    return len(pair) == 2 and abs(pair[1] - pair[0]) <= 1e-4 and pair[1] <= 0.02


class LayerMemoryMethod(EditMethod):
    scoring_backends = ("hf",)
    default_depth = (27, 32)
    #: whether the hook changes each position's output from that position's own input alone: the
    #: model then stays causal, and a teacher-forced pass holds what greedy decoding computes
    #: (``harness/evaluation/drafts.py``). WISE and MEMOIR route a whole input at once: no.
    position_wise = False

    def layer_index(self) -> int:
        """The hooked layer: ``config.layer``, else :attr:`default_depth` of the model's depth."""
        layout = self.ctx.layout
        layer = self.config.layer
        if layer is None:
            layer = self.default_depth[0] * layout.n_layers // self.default_depth[1]
        return layout.resolve_layer(layer)

    def module_name(self) -> str:
        return self.ctx.layout.mlp_out_name(self.layer_index())

    def lower_blocks(self) -> LowerBlocks:
        """One edit's replay of the blocks below the hooked layer: an edit trains on one batch for
        ``n_iter`` steps, and nothing below the layer changes meanwhile (``lower_blocks.py``)."""
        return LowerBlocks(self.ctx.model, self.ctx.layout, self.layer_index(),
                           tuned=self.module_name(), idle_hooks=self.idle_while_editing())

    def step_logits(self, lower: LowerBlocks, batch: PairBatch,
                    answers: AnswerPositions) -> torch.Tensor:
        """One training step's logits on ``batch``: the blocks below the layer replayed
        (``lower``), the head run only where the loss reads (``answers``,
        ``answer_positions.py``)."""
        model = self.ctx.model
        return answers.logits(model, lambda: lower.same_batch(lambda: model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask,
            use_cache=False).logits))

    def idle_while_editing(self) -> list[int]:
        """The ids of this method's hooks that an edit's training passes need not run, so that
        they do not keep those passes on the model's own forward (``upper_blocks.py``): none
        unless a method says so."""
        return []

    def hooked_module(self) -> nn.Module:
        return self.ctx.model.get_submodule(self.module_name())

    def edited_parameters(self) -> list[str]:
        return []

    # -- what ``editbench plan`` counts ----------------------------------------------------------
    #: rows trained per edit: the edit's own prompt and any generated prefixes (WISE's templates)
    def rows_per_edit(self) -> int:
        return 1

    def row_tokens(self, run: RunShape) -> int:
        """Tokens of one trained row (a prefixed row is longer than the record)."""
        return run.tokens_per_record

    def memory_bytes(self, shape: ModelShape, run: RunShape, out_in: tuple[int, int]) -> int:
        """The memory beside the layer after ``run.edits`` edits (a subclass's codebook or side
        copy)."""
        raise NotImplementedError

    def trained_bytes(self, shape: ModelShape, out_in: tuple[int, int]) -> int:
        """What one edit's training holds beside the activations (the trained tensor's gradient and
        Adam)."""
        raise NotImplementedError

    def cost(self, shape: ModelShape, run: RunShape) -> MethodCost:
        """``n_iter`` forward and backward passes per edit (one edit at a time) over its rows, the
        gradient reaching down to the hooked layer (at most: the blocks below it run once per
        edit, ``lower_blocks``); the memory grows with the edits and stays resident, and the
        recorded input of the hooked layer while an edit trains."""
        module = self.module_name()
        out_in = shape.out_in(module)
        above = shape.n_layers - shape.layout.layer_of(module)
        rows = self.rows_per_edit()  # edits are trained one at a time, whatever the batch
        tokens = self.row_tokens(run)
        recorded = (rows * tokens * shape.hidden * shape.dtype_bytes
                    if shape.layout.layer_of(module) > 0 else 0)
        transient = (backward_bytes(shape, rows * tokens, above, length=tokens)
                     + self.trained_bytes(shape, out_in) + recorded)
        per_token = forward_flops(shape, 1) * (1 + 2 * above / shape.n_layers)
        flops = self.config.n_iter * run.edits * rows * tokens * per_token
        resident = weights_bytes(shape) + self.memory_bytes(shape, run, out_in)
        return MethodCost(self.name, resident, (PhaseCost("editing", transient, flops,
                                                          f"{self.config.n_iter} steps per edit"),))
