"""``editbench export``: a run's config, per-checkpoint metrics and plots in W&B (offline mode)
and MLflow (a local file store)."""

import json
import struct

import pytest
from click.testing import CliRunner
from conftest import write_edits

from editbench.harness.cli.group import main


@pytest.fixture(scope="module")
def finished(tmp_path_factory, micro_gpt2):
    """A stored run of ft-m with checkpoints after 3 and 6 edits, and its per-checkpoint means."""
    folder = tmp_path_factory.mktemp("export-run")
    path = write_edits(folder / "mine.jsonl", 6)
    out = folder / "out"
    result = CliRunner().invoke(main, [
        "run", "--task", str(path), "--model", str(micro_gpt2), "--methods", "ft-m",
        "--batch-size", "3", "--checkpoints", "3,6", "--gen-eval", "off",
        "--out", str(out), "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    from editbench.core.store import load_results

    with load_results(out) as store:
        summary = store.summary()
    return out, summary


def wandb_records(path):
    """The records of an offline W&B run file (LevelDB log blocks of protobuf records; wandb no
    longer ships a Python reader for them)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, pending = path.read_bytes(), 32768, 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:  # the block's zero padding
            pos += room
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            yield record


def test_wandb_offline_export_holds_the_runs_metrics_config_and_plots(
    finished, tmp_path, monkeypatch
):
    pytest.importorskip("wandb", reason='the W&B export needs `pip install "editbench[wandb]"`')
    out, summary = finished
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = CliRunner().invoke(main, ["export", str(out), "--wandb", "editbench-test"])
    assert result.exit_code == 0, result.output
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    history, config, images = {}, {}, []
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            items = {
                item.key or "/".join(item.nested_key): json.loads(item.value_json)
                for item in record.history.item
            }
            if "edits" in items:
                history[items["edits"]] = items
            images += [key for key in items if key.startswith("plots/")]
        elif kind == "run":
            config.update(
                {item.key: json.loads(item.value_json) for item in record.run.config.update}
            )
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
    assert sorted(history) == [3, 6]
    for point in summary.itertuples():
        assert history[point.n_edits]["efficacy_acc/ft-m"] == pytest.approx(point.efficacy_acc)
        assert history[point.n_edits]["specificity_agree/ft-m"] == pytest.approx(
            point.specificity_agree
        )
    flat = {k: v.get("value", v) if isinstance(v, dict) else v for k, v in config.items()}
    assert flat["task"] == "jsonl" and flat["run.batch_size"] == 3 and "methods.ft-m.lr" in flat
    assert any("metrics" in key for key in images)


def test_mlflow_file_store_export_holds_the_runs_metrics_config_and_plots(finished, tmp_path):
    mlflow = pytest.importorskip(
        "mlflow", reason='the MLflow export needs `pip install "editbench[mlflow]"`'
    )
    out, summary = finished
    result = CliRunner().invoke(main, ["export", str(out), "--mlflow", str(tmp_path / "mlruns"),
                                       "--experiment", "editbench-test"])
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("editbench-test").experiment_id])
    history = {
        m.step: m.value for m in client.get_metric_history(run.info.run_id, "efficacy_acc/ft-m")
    }
    assert history == pytest.approx(dict(zip(summary["n_edits"], summary["efficacy_acc"])))
    assert run.data.params["task"] == "jsonl" and run.data.params["run.batch_size"] == "3"
    assert run.data.tags["editbench.run_id"] == summary["run_id"].iloc[0]
    assert any(
        a.path.endswith("metrics.png") for a in client.list_artifacts(run.info.run_id, "plots")
    )


def test_export_needs_a_tracker(finished):
    result = CliRunner().invoke(main, ["export", str(finished[0])])
    assert result.exit_code == 2 and "--wandb PROJECT" in result.output
