from dataclasses import dataclass

import pytest

from editbench.core.configs import build_config, parse_overrides
from editbench.core.registry import Registry
from editbench.methods import METHODS
from editbench.tasks import TASKS


def test_unknown_name_lists_what_is_registered():
    registry = Registry("widget", "editbench.no-such-group")

    @registry.register("a")
    class A:
        pass

    assert registry.get("a") is A
    with pytest.raises(KeyError, match="registered widgets: a"):
        registry.get("b")


def test_entry_point_plugins_are_loaded_lazily(monkeypatch):
    class FakeEntryPoint:
        name, value = "plugin", "somewhere:Plugin"

        def load(self):
            return "the plugin"

    import editbench.core.registry as module

    monkeypatch.setattr(module, "entry_points", lambda group: [FakeEntryPoint()] if group == "g" else [])
    registry = Registry("thing", "g")
    assert registry.get("plugin") == "the plugin"
    assert registry.names() == ["plugin"]


def test_builtins_are_registered():
    assert {"ft-l", "ft-m"} <= set(METHODS.names())
    assert {"pocket", "jsonl"} <= set(TASKS.names())


@dataclass(frozen=True)
class Example:
    lr: float = 0.1
    steps: int = 3
    layer: int | None = None
    layers: tuple[int, ...] = (1,)
    flag: bool = False


def test_build_config_converts_each_declared_type():
    config = build_config(Example, {"lr": "1e-3", "steps": "7", "layer": "none", "layers": "2,3", "flag": "true"}, "m")
    assert config == Example(lr=1e-3, steps=7, layer=None, layers=(2, 3), flag=True)


def test_build_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"m has no setting 'lrr'.*lr"):
        build_config(Example, {"lrr": "1"}, "m")
    with pytest.raises(ValueError, match=r"m\.steps: 'many' is not a valid int"):
        build_config(Example, {"steps": "many"}, "m")


def test_parse_overrides():
    assert parse_overrides(["ft-m.lr=1e-3", "pocket.n_entities=40", "rledit@paper.steps=2"]) == {
        "ft-m": {"lr": "1e-3"}, "pocket": {"n_entities": "40"}, "rledit@paper": {"steps": "2"}}
    with pytest.raises(ValueError, match="NAME.FIELD=VALUE"):
        parse_overrides(["lr=3"])
