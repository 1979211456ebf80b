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

    monkeypatch.setattr(
        module, "entry_points", lambda group: [FakeEntryPoint()] if group == "g" else []
    )
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
    config = build_config(
        Example, {"lr": "1e-3", "steps": "7", "layer": "none", "layers": "2,3", "flag": "true"}, "m"
    )
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


def test_a_class_is_registered_under_its_own_name_only():
    from editbench.core.method import EditMethod

    class Named(EditMethod):
        name = "right"

    class Unnamed(EditMethod):
        pass

    registry = Registry("method", "editbench.no-such-group")
    with pytest.raises(ValueError, match="registered from .*Named, whose name is 'right'"):
        registry.register("wrong")(Named)
    with pytest.raises(ValueError, match="whose name is None; set .*Unnamed.name = 'x'"):
        registry.register("x")(Unnamed)
    assert registry.register("right")(Named) is Named
    for known in (METHODS, TASKS):
        assert all(known[n].name == n for n in known.names())


def test_registry_indexing_and_the_declared_default():
    registry = Registry("widget", "editbench.no-such-group")
    with pytest.raises(KeyError, match="no widget is registered as the default"):
        registry.default()

    @registry.register("a", default=True)
    class A:
        pass

    assert registry["a"] is A and registry.default() == "a"
    with pytest.raises(ValueError, match="both declare themselves the default"):
        registry.register("b", default=True)(object)
    assert TASKS.default() == "pocket"


def test_method_labels_are_parsed_once_with_their_preset():
    from editbench.core.method import MethodRef

    ref = MethodRef.parse("rledit@release")
    assert (ref.label, ref.name, ref.preset) == ("rledit@release", "rledit", "release")
    assert ref.config({"rledit": {"depth": "3"}}).depth == 3
    for bad in ("@release", "rledit@"):
        with pytest.raises(ValueError, match="expected NAME or NAME@PRESET"):
            MethodRef.parse(bad)
    with pytest.raises(ValueError, match="has no preset 'nope'"):
        MethodRef.parse("rledit@nope").config({})


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 0, "--batch-size must be an integer of at least 1"),
    ("eval_sample", 1, "--eval-sample must be an integer of at least 2"),
    ("limit", -1, "--limit must be an integer of at least 1"),
    ("edits", 0, "--edits must be an integer of at least 1"),
    ("seed", "x", "--seed 'x': expected comma-separated integers"),
    ("dtype", "float8", "--dtype 'float8' is not one of"),
    ("probe_backend", "onnx", "--probe-backend 'onnx'"),
    ("vllm_memory", 1.5, "--vllm-memory must be a share"),
    ("capability", ("glue",), "--capability: unknown set 'glue'"),
    ("methods", ("ft-m", "ft-m"), "lists a method twice"),
])
def test_a_run_spec_refuses_bad_options_when_it_is_made(field, value, message):
    from editbench.harness.plan.settings import RunSpec

    with pytest.raises(ValueError, match=message):
        RunSpec(**{field: value})


def test_a_param_for_a_method_or_task_not_in_the_run_is_an_error(tmp_path):
    from editbench.harness.plan.resolve import check_param_owners, method_setups, resolve_task
    from editbench.harness.plan.settings import RunSpec

    spec = RunSpec(methods=("ft-l",), params={"ftm": {"lr": "1"}}, cache_dir=tmp_path)
    with pytest.raises(
        ValueError,
        match=r"'ftm' is neither the task nor a method of this run \(selected: ft-l, pocket\)",
    ):
        check_param_owners(spec, resolve_task(spec), method_setups(spec))


def test_a_misspelt_setting_gets_a_suggestion():
    from editbench.methods.rledit import RLEditConfig

    with pytest.raises(ValueError, match="has no setting 'layer'; did you mean 'layers'\\?"):
        build_config(RLEditConfig, {"layer": "3"}, owner="method rledit")
    with pytest.raises(ValueError, match="has no setting 'zzz'; its settings are"):
        build_config(RLEditConfig, {"zzz": "3"}, owner="method rledit")
