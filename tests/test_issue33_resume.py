"""Kill and resume for dense retrieval and lora-ft (issue 33): a run killed after a checkpoint and
resumed stores the same scores as an uninterrupted one. Real ``editbench`` processes on a micro
model, as in test_memory_methods_resume.py; the micro model serves as the dense encoder too."""

from __future__ import annotations

import pytest
from test_faults import checkpoints, scores
from test_memory_methods_resume import METHODS, _run

from editbench.core.faults import FAULT_EXIT


@pytest.mark.slow
@pytest.mark.parametrize("method", ["retrieval-dense", "lora-ft"])
def test_killed_after_a_checkpoint_then_resumed_equals_an_uninterrupted_run(
    tmp_path, micro_llama, method, monkeypatch
):
    if method == "lora-ft":
        pytest.importorskip("peft")
        settings = ["--param", "lora-ft.epochs=3", "--param", "lora-ft.chunk=1"]
    else:
        pytest.importorskip("faiss")
        settings = ["--param", f"retrieval.encoder={micro_llama}", "--param",
                    "retrieval.encoder_backend=transformers", "--param", "retrieval.index=hnsw",
                    "--param", "retrieval.always=true", "--param", "retrieval.context=qa"]
    name = "lora-ft" if method == "lora-ft" else "retrieval"
    monkeypatch.setitem(METHODS, name, settings)
    cache = tmp_path / "cache"
    clean = _run(micro_llama, tmp_path / "clean", cache, name)
    assert clean.returncode == 0, clean.stderr[-3000:]
    out = tmp_path / "out"
    assert _run(micro_llama, out, cache, name, "after-checkpoint:2").returncode == FAULT_EXIT
    assert checkpoints(out) == [2, 4]
    resumed = _run(micro_llama, out, cache, name)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after 4 stored edits" in resumed.stderr
    clean_scores = scores(tmp_path / "clean")
    pd = pytest.importorskip("pandas")
    pd.testing.assert_frame_equal(scores(out), clean_scores)
