"""A run's settings are declared once (``harness/plan/settings.py``): the ``run`` command's options,
the keys of a run file and the keyword arguments of ``editbench.run`` are one set, with one set of
defaults and one set of checks."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from editbench.harness import api
from editbench.harness.cli.group import main
from editbench.harness.cli.run import run as run_command
from editbench.harness.plan.settings import RunSpec, flag_of, settings_fields

#: options of ``run`` that are about the command itself, not the run (how it prints its table:
#: --columns, --all, change nothing the run computes or stores)
COMMAND_ONLY = {"config", "dump_config", "dry_run", "table_columns", "table_all"}


def test_the_cli_options_run_file_keys_and_api_keywords_are_one_set():
    fields = {item.name for item in settings_fields()}
    options = {p.name for p in run_command.params} - COMMAND_ONLY
    file_keys = set(RunSpec().to_mapping())
    assert options == fields == file_keys
    assert {"methods", "seed", "params", "editors", "batch_size", "cache_dir"} <= fields
    for item in settings_fields():  # every key is a keyword of the API, accepted as it is dumped
        assert api.settings(**{item.name: RunSpec().to_mapping()[item.name]}) == RunSpec()
    assert list(inspect.signature(RunSpec).parameters) == [item.name for item in settings_fields()]


def test_one_set_of_defaults():
    dumped = CliRunner().invoke(main, ["run", "--dump-config"])
    assert dumped.exit_code == 0, dumped.output
    assert RunSpec.from_mapping(yaml.safe_load(dumped.output)) == RunSpec() == api.settings()
    shown = {p.name: p for p in run_command.params}
    defaults = RunSpec()
    # what --help shows is the field's default, not one of the CLI's own
    for item in settings_fields():
        option, default = shown[item.name], getattr(defaults, item.name)
        if option.default is None or option.multiple:
            assert default in (None, (), {}), item.name
        else:
            assert RunSpec(**{item.name: option.default}) == defaults, item.name


def test_a_spec_reads_back_from_its_run_file_and_its_flags():
    spec = RunSpec(
        methods=("ft-m", "memit@llama3-8b"), seed=(0, 2), checkpoints=(5, 10), gen_eval=False,
        params={"ft-m": {"lr": "0.01"}}, editors={"mend": Path("trained")}, master_copy=False,
        capability=("sst2",), capability_at=(10,), lenient=True, batch_size=5, edits=10
    )
    assert RunSpec.from_mapping(spec.to_mapping()) == spec
    assert RunSpec.from_mapping(yaml.safe_load(yaml.safe_dump(spec.to_mapping()))) == spec
    flags = ["--methods", "ft-m,memit@llama3-8b", "--seed", "0,2", "--checkpoints", "5,10",
             "--gen-eval", "off", "--param", "ft-m.lr=0.01", "--editor", "mend=trained",
             "--no-master-copy", "--capability", "sst2",
             "--capability-at", "10", "--lenient", "--batch-size", "5", "--edits", "10"]
    dumped = CliRunner().invoke(main, ["run", *flags, "--dump-config"])
    assert dumped.exit_code == 0, dumped.output
    assert RunSpec.from_mapping(yaml.safe_load(dumped.output)) == spec


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 0, "--batch-size must be an integer of at least 1"),
    ("dtype", "float8", "--dtype 'float8' is not one of"),
    ("checkpoints", "10,x", "--checkpoints '10,x': expected comma-separated integers"),
])
def test_one_set_of_checks(tmp_path, field, value, message):
    """The same bad value gets the same message from the flags, a run file and the API."""
    with pytest.raises(ValueError, match=message):
        api.settings(**{field: value})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({field: value}))
    with pytest.raises(ValueError, match=message):
        api.settings(path)
    flag = flag_of(next(item for item in settings_fields() if item.name == field))
    result = CliRunner().invoke(main, ["run", flag, str(value), "--dump-config"])
    assert result.exit_code == 1 and message in " ".join(result.output.split())


def test_a_run_file_under_the_flags_merges_params_field_by_field(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"params": {"ft-m": {"lr": 0.1, "steps": 3}}, "edits": 8}))
    spec = api.settings(path, params={"ft-m": {"lr": 0.01}}, edits=4)
    assert spec.params == {"ft-m": {"lr": "0.01", "steps": "3"}} and spec.edits == 4


def test_every_field_says_what_it_is():
    for item in settings_fields():
        option = item.metadata["option"]
        assert option.help.endswith((".", ")")) and len(option.help) > 15, item.name
    assert dataclasses.is_dataclass(RunSpec)
