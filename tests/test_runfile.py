"""Run files: ``editbench run --config FILE``, flags over it, ``--dump-config``."""

import json

import pytest
import yaml
from click.testing import CliRunner

from editbench.harness.cli.group import main

RUN_FILE = """\
methods: [ft-m, memit@llama3-8b]
edits: 20
batch-size: 5
seed: [0, 1]
checkpoints: [5, 10, 20]
params:
  ft-m: {lr: 0.001, steps: 5}
  pocket: {n_entities: 40}
gen_eval: off
lenient: true
save_model: 10
"""


def dump(*args: str) -> dict:
    result = CliRunner().invoke(main, ["run", *args, "--dump-config"])
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.output)


def test_run_file_round_trips_and_flags_override_it(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(RUN_FILE)
    data = dump("--config", str(path), "--edits", "30", "--param", "ft-m.lr=0.01", "--seed", "3")
    assert data["methods"] == ["ft-m", "memit@llama3-8b"]
    assert data["edits"] == 30 and data["seed"] == 3  # the flags win
    assert (
        data["batch_size"] == 5 and data["checkpoints"] == [5, 10, 20] and data["save_model"] == 10
    )
    # --param merges field by field: lr from the flag, steps and the task's setting from the file
    assert data["params"] == {"ft-m": {"lr": "0.01", "steps": "5"}, "pocket": {"n_entities": "40"}}
    assert data["gen_eval"] is False and data["lenient"] is True
    # every option, defaults included
    assert data["device"] == "auto" and data["out"] == "editbench-results"

    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(yaml.safe_dump(data))
    assert dump("--config", str(dumped)) == data  # the resolved file reads back as itself


def test_a_json_run_file_is_read_too(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"methods": "ft-m", "edits": 8, "seed": [0, 2], "gen-eval": False}))
    data = dump("--config", str(path))
    assert data["methods"] == ["ft-m"] and data["edits"] == 8 and data["seed"] == [0, 2]
    assert data["gen_eval"] is False


def test_without_a_file_the_dump_is_the_defaults():
    data = dump()
    assert (
        data["methods"] == []
        and data["protocol"] == "editbench"
        and data["batch_size"] is None  # the protocol's (10 under editbench)
        and data["seed"] == 0
        and data["params"] == {}
    )


@pytest.mark.parametrize("text, message", [
    ("batchsize: 4\n", "unknown option 'batchsize'; did you mean 'batch_size'?"),
    ("params: [1, 2\n", "not valid YAML"),
    ("- edits\n", "expected a mapping of run options"),
    ("lenient: maybe\n", "lenient is a flag"),
])
def test_a_bad_run_file_is_one_line_naming_it(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["run", "--config", str(path), "--dump-config"])
    assert result.exit_code == 1 and message in result.output and str(path) in result.output
    assert "Traceback" not in result.output


def test_a_run_from_a_file_uses_it_under_the_flags_and_keeps_it(tmp_path, micro_gpt2):
    from conftest import write_edits

    from editbench.core.store import load_results

    out = tmp_path / "out"
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "task": str(write_edits(tmp_path / "mine.jsonl", 6)), "model": str(micro_gpt2),
        "methods": ["ft-m"], "batch_size": 3, "edits": 6, "device": "cpu",
        "gen_eval": False, "params": {"ft-m": {"steps": 2}}, "out": str(out),
    }))
    result = CliRunner().invoke(
        main, ["run", "--config", str(path), "--edits", "3", "--param", "ft-m.lr=0.01"]
    )
    assert result.exit_code == 0, result.output
    with load_results(out) as store:
        assert list(store.checkpoints()["n_edits"]) == [3]  # --edits 3 over the file's 6
        config = store.cells()["method_config"].iloc[0]
    config = json.loads(config) if isinstance(config, str) else config
    # the file's and the flag's settings, merged
    assert config["steps"] == 2 and config["lr"] == 0.01
    (kept,) = (out / "run-files").iterdir()
    assert yaml.safe_load(kept.read_text())["edits"] == 3
