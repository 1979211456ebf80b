import pytest
import torch
from conftest import micro_config
from transformers import AutoModelForCausalLM

from editbench.core.models import ModelLayout, weight_as_out_in

FAMILIES = ["gpt2", "gptj", "llama", "mistral", "qwen2", "gemma"]


@pytest.mark.parametrize("family", FAMILIES)
def test_layout_locates_the_mlp_of_every_supported_family(family):
    model = AutoModelForCausalLM.from_config(micro_config(family, 100))
    layout = ModelLayout.of(model)
    assert layout.n_layers == 3
    hidden = 32
    for layer in range(layout.n_layers):
        out = model.get_submodule(layout.mlp_out_name(layer))
        w = weight_as_out_in(out, layout.family.conv1d)
        assert w.shape[0] == hidden  # projects back to the residual stream
        for name in layout.mlp_in_names(layer):
            w_in = weight_as_out_in(model.get_submodule(name), layout.family.conv1d)
            assert w_in.shape[1] == hidden and w_in.shape[0] == w.shape[1]
    assert layout.resolve_layer(-1) == 2
    with pytest.raises(ValueError, match="out of range"):
        layout.mlp_out_name(3)


def test_unsupported_architecture_is_named():
    model = torch.nn.Linear(2, 2)
    model.config = type("C", (), {"model_type": "mystery"})()
    with pytest.raises(ValueError, match="'mystery'"):
        ModelLayout.of(model)
