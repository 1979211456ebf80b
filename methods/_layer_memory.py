"""What GRACE and WISE share: a memory beside one MLP output projection, read by a forward hook.

Neither changes a weight (``edited_parameters`` is empty: snapshots carry their state instead), and
a hook is a change of the forward computation a vLLM engine cannot run, so both are scored with HF.
Their configs have a ``layer`` field; ``None`` falls at 27/32 of the depth, the layer EasyEdit's
Llama-2-7B files give both (``hparams/GRACE/llama-7b.yaml``, ``hparams/WISE/llama-7b.yaml``).
"""

from __future__ import annotations

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
from ..core.method import EditMethod


class LayerMemoryMethod(EditMethod):
    scoring_backends = ("hf",)
    default_depth = (27, 32)

    def module_name(self) -> str:
        layout = self.ctx.layout
        layer = self.config.layer
        if layer is None:
            layer = self.default_depth[0] * layout.n_layers // self.default_depth[1]
        return layout.mlp_out_name(layout.resolve_layer(layer))

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
        gradient reaching down to the hooked layer; the memory grows with the edits and stays
        resident."""
        module = self.module_name()
        out_in = shape.out_in(module)
        above = shape.n_layers - shape.layout.layer_of(module)
        rows = self.rows_per_edit()  # edits are trained one at a time, whatever the batch
        tokens = self.row_tokens(run)
        transient = (backward_bytes(shape, rows * tokens, above, length=tokens)
                     + self.trained_bytes(shape, out_in))
        per_token = forward_flops(shape, 1) * (1 + 2 * above / shape.n_layers)
        flops = self.config.n_iter * run.edits * rows * tokens * per_token
        resident = weights_bytes(shape) + self.memory_bytes(shape, run, out_in)
        return MethodCost(self.name, resident, (PhaseCost("editing", transient, flops,
                                                          f"{self.config.n_iter} steps per edit"),))
