"""What GRACE and WISE share: a memory beside one MLP output projection, read by a forward hook.

Neither changes a weight (``edited_parameters`` is empty: snapshots carry their state instead), and a
hook is a change of the forward computation a vLLM engine cannot run, so both are scored with HF.
Their configs have a ``layer`` field; ``None`` falls at 27/32 of the depth, the layer EasyEdit's
Llama-2-7B files give both (``hparams/GRACE/llama-7b.yaml``, ``hparams/WISE/llama-7b.yaml``).
"""

from __future__ import annotations

from torch import nn

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
