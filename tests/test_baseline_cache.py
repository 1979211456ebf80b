"""The unedited model's baseline, cached for the next run of the same plan (baseline_cache.py)."""

import logging
import sqlite3
from dataclasses import replace

from editbench.harness.plan.resolve import resolve_sweep
from editbench.harness.plan.settings import RunSpec
from editbench.harness.running import baseline_cache
from editbench.harness.running.executors import run_local

POCKET = {"pocket": {"n_entities": "20"}}


def _unedited(out):
    with sqlite3.connect(out / "results.sqlite") as conn:
        return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall())
                for table in ("base_predictions", "base_generations", "sample_prompts")} | {
            "summary": conn.execute("SELECT baseline FROM runs").fetchall()}


def test_a_second_run_of_the_same_plan_reads_the_unedited_scores_from_the_cache(
    tmp_path, micro_llama, caplog
):
    spec = RunSpec(methods=("ft-m",), model=str(micro_llama), edits=4, batch_size=2,
                   out=tmp_path / "first", device="cpu", cache_dir=tmp_path / "cache",
                   params=POCKET)
    run_local(resolve_sweep(spec))
    assert len(list((tmp_path / "cache" / baseline_cache.FOLDER).glob("*.json"))) == 1
    with caplog.at_level(logging.INFO):
        run_local(resolve_sweep(replace(spec, out=tmp_path / "second")))
    assert "from the cache" in caplog.text
    assert _unedited(tmp_path / "second") == _unedited(tmp_path / "first")
    caplog.clear()
    with caplog.at_level(logging.INFO):  # another plan (more edits): computed, filed apart
        run_local(resolve_sweep(replace(spec, edits=6, out=tmp_path / "third")))
    assert "from the cache" not in caplog.text
    assert len(list((tmp_path / "cache" / baseline_cache.FOLDER).glob("*.json"))) == 2


def test_the_key_changes_with_the_model_code_numerics_and_backend():
    base = dict(run_id="r", model_fingerprint="m", backend="hf", code="c",
                numerics={"threads": 1, "cpu_capability": "AVX512"})
    key = baseline_cache.baseline_key(**base)
    assert key == baseline_cache.baseline_key(**base)
    for change in ({"run_id": "r2"}, {"model_fingerprint": "m2"}, {"backend": "vllm"},
                   {"code": "c2"}, {"numerics": {"threads": 2, "cpu_capability": "AVX512"}}):
        assert baseline_cache.baseline_key(**{**base, **change}) != key


def test_a_damaged_cache_entry_is_computed_again(tmp_path, caplog):
    path = tmp_path / baseline_cache.FOLDER / "k.json"
    path.parent.mkdir()
    path.write_text("{not json")
    assert baseline_cache.load(tmp_path, "k") is None
    assert "cannot be read" in caplog.text
    assert baseline_cache.load(tmp_path, "absent") is None
