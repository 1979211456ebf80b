"""Generated evaluation along a run: on a pocket model that knows its world (its facts end with "."
and EOS), the unedited model's generated accuracy is measured and stored, every checkpoint stores
generated metrics beside teacher-forced ones, and the report shows the gap between them."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from editbench.core.store import load_results
from editbench.harness.cli import main
from editbench.harness.runner import Runner, RunSpec
from editbench.tasks.pocket import PocketConfig, PocketWorld
from editbench.tasks.pocket_model import PocketModelConfig, ensure_pocket_model

WORLD = {"n_entities": "10", "n_cities": "6"}  # the 11-relation world, kept small


@pytest.fixture(scope="module")
def pocket_model(tmp_path_factory):
    world = PocketWorld(PocketConfig(n_entities=10, n_cities=6))
    config = PocketModelConfig(vocab_size=300, hidden_size=64, intermediate_size=128, n_layers=2, steps=400,
                               batch_size=32, lr=1e-2)
    return ensure_pocket_model(world, tmp_path_factory.mktemp("pocket"), config)


def test_a_run_stores_generated_metrics_and_the_report_shows_the_gap(pocket_model, tmp_path):
    spec = RunSpec(methods=("ft-m",), model=str(pocket_model), edits=8, batch_size=4, out=tmp_path / "out",
                   device="cpu", cache_dir=tmp_path, params={"pocket": WORLD, "ft-m": {"lr": "1e-2"}})
    runner = Runner(spec)
    assert runner.run().ok
    store = load_results(spec.out)
    baseline = store.runs()["baseline"][0]
    assert baseline["pre_edit_gen_em"] > 0.5  # the unedited model generates the true answers it was taught
    assert baseline["pre_edit_efficacy_gen_em"] == 0.0  # and none of the counterfactual targets
    metrics = set(store.scores()["metric"])
    assert {"efficacy_acc", "efficacy_gen_em", "efficacy_gen_prefix", "generalization_gen_em",
            "specificity_gen_agree"} <= metrics
    assert len(store.load_base_generations(runner.run_id)) == len({n.prompt for r in runner.records for n in r.neighbours})
    assert "generated" in store.runs()["config"][0]
    result = CliRunner().invoke(main, ["report", str(spec.out), "--html", str(tmp_path / "html")])
    assert result.exit_code == 0, result.output
    board = json.loads((tmp_path / "html" / "leaderboard.json").read_text())["boards"][0]
    assert "efficacy_mirage_gap" in {c["key"] for c in board["columns"]}
    final = [r for r in board["rows"] if r["n_edits"] == 8][0]["cells"]
    assert final["efficacy_mirage_gap"]["mean"] == pytest.approx(final["efficacy_acc"]["mean"]
                                                                 - final["efficacy_gen_em"]["mean"])
    assert board["lifelong"][0]["collapse_metrics"][0] == "efficacy_gen_em"


def test_generated_evaluation_can_be_turned_off(pocket_model, tmp_path):
    spec = RunSpec(methods=("ft-m",), model=str(pocket_model), edits=4, batch_size=4, out=tmp_path / "out",
                   device="cpu", cache_dir=tmp_path, params={"pocket": WORLD}, gen_eval=False)
    assert Runner(spec).run().ok
    store = load_results(spec.out)
    assert not {m for m in store.scores()["metric"] if "_gen_" in m}
    assert "pre_edit_gen_em" not in store.runs()["baseline"][0]
