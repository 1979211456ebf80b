"""Published models, built from their published configs on the ``meta`` device (no memory, no
weights).

``tests/configs/*.json`` hold the values of each model's ``config.json`` that shape it. These tests
check that editbench recognises each model and edits the modules its methods' releases edit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from editbench.core.architectures import recognise
from editbench.core.models import ModelLayout
from editbench.methods.hypernet.modules import PUBLISHED_MODULES, select_modules

CONFIGS = Path(__file__).resolve().parent / "configs"


def meta_model(name: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    values = json.loads((CONFIGS / f"{name}.json").read_text())
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIGS.glob("*.json")))
def test_each_published_model_is_recognised_from_its_config(name):
    model = meta_model(name)
    assert recognise(model.config) == name
    assert next(model.parameters()).device.type == "meta"


def test_an_unpublished_shape_is_not_recognised(micro_llama):
    from transformers import AutoConfig

    assert recognise(AutoConfig.from_pretrained(micro_llama)) is None


@pytest.mark.parametrize("method, name, expected", [
    ("mend", "gpt2-xl",
     [f"transformer.h.{i}.mlp.{m}" for i in (45, 46, 47) for m in ("c_fc", "c_proj")]),
    ("mend", "gpt-j-6b",
     [f"transformer.h.{i}.mlp.{m}" for i in (25, 26, 27) for m in ("fc_in", "fc_out")]),
    ("malmen", "gpt-j-6b", [f"transformer.h.{i}.mlp.fc_out" for i in range(22, 28)]),
    ("rledit", "llama-3-8b",
     [f"model.layers.{i}.mlp.{m}" for i in range(22, 31) for m in ("gate_proj", "up_proj")]),
    ("rledit", "gemma-2-9b",
     [f"model.layers.{i}.mlp.{m}" for i in range(32, 41) for m in ("gate_proj", "up_proj")]),
    ("rledit", "mistral-7b", ["model.layers.17.mlp.down_proj", "model.layers.18.mlp.down_proj"]),
    ("rledit", "gpt2-xl", [f"transformer.h.{i}.mlp.c_proj" for i in range(32, 41)]),
    ("rledit", "gpt-j-6b", [f"transformer.h.{i}.mlp.fc_out" for i in range(22, 28)]),
    ("malmen", "llama-3-8b",
     [f"model.layers.{i}.mlp.{m}" for i in range(22, 31) for m in ("gate_proj", "up_proj")]),
])
def test_hypernetworks_edit_the_modules_their_releases_edit(method, name, expected):
    model = meta_model(name)
    layers, which = PUBLISHED_MODULES[(method, recognise(model.config))]
    modules = select_modules(model, ModelLayout.of(model), layers, which)
    assert [m.name for m in modules] == expected


def test_a_model_no_release_covers_gets_the_default_band():
    model = meta_model("qwen2.5-7b")
    assert ("rledit", recognise(model.config)) not in PUBLISHED_MODULES
    names = [m.name for m in select_modules(model, ModelLayout.of(model), ())]
    assert (
        names[0] == "model.layers.20.mlp.gate_proj" and names[-1] == "model.layers.26.mlp.up_proj"
    )


@pytest.mark.parametrize("label, name", [
    ("rledit", "llama-3-8b"),
    ("mend", "gpt-j-6b"),
    ("rledit@release", "mistral-7b"),
])
def test_the_published_modules_are_the_model_s_preset(label, name):
    """The runner passes the model's architecture: its release's modules come with every preset."""
    from editbench.core.method import MethodRef

    config = MethodRef.parse(label).config({}, name)
    assert (config.layers, config.modules) == PUBLISHED_MODULES[(label.partition("@")[0], name)]
    assert MethodRef.parse(label).config({}).layers == ()  # an unknown model: the default band


def test_the_runner_reads_the_architecture_from_the_config_alone(tmp_path, caplog):
    """No weights are needed: a folder with only the published config.json is recognised, and the
    methods' plans take its release's settings (and say so)."""
    from transformers import AutoConfig

    from editbench.core.architectures import architecture_of
    from editbench.harness.plan.resolve import method_setups
    from editbench.harness.plan.settings import RunSpec

    values = json.loads((CONFIGS / "llama-3-8b.json").read_text())
    AutoConfig.for_model(values.pop("model_type"), **values).save_pretrained(tmp_path)
    assert architecture_of(str(tmp_path)) == "llama-3-8b"
    assert architecture_of(str(tmp_path / "missing")) is None
    with caplog.at_level("INFO"):
        rledit, ftm = method_setups(RunSpec(methods=("rledit@release", "ft-m")), "llama-3-8b")
    assert rledit.config.layers == tuple(range(22, 31)) and rledit.config.edit_lr == 1e-6
    assert ftm.config.layer == 21
    assert "taking the settings published for llama-3-8b (preset ft-m@llama-3-8b)" in caplog.text
