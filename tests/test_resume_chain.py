"""Kill and resume for every method whose lifelong state lives beside the weights (a codebook, side
memories, stored masks, stored text, normaliser statistics, a queue, sums of earlier keys, an
adapter, a seeded shuffle): a run killed right after a checkpoint and resumed scores exactly as an
uninterrupted one.

Real ``editbench`` processes on a micro model, as in test_faults.py, chained so that one group of
methods needs ``N + 2`` processes rather than ``3 N``, each forked from one that imported torch once
(tests/forked.py; issue 30: the suite's time was mostly interpreters importing torch). One
uninterrupted run of the whole group is the reference. Then each process is killed right after the
second checkpoint of the next method in the group, having first resumed the method the previous
process left after its second checkpoint; the last process finishes the last method. So every method
is killed after checkpoints [2, 4], exactly as the one-method tests this replaces did, and resumed
from 4 by a fresh process."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import forked
import pandas as pd
import pytest
from test_faults import _env, scores

from editbench.core.faults import FAULT_EXIT
from editbench.core.store import load_results

#: small settings, so each method takes a second or two; every one keeps state across batches
MEMORY_AND_NORMALISERS = {
    "grace": ["--param", "grace.n_iter=3"],
    "wise": ["--param", "wise.n_iter=3", "--param", "wise.n_templates=1",
             "--param", "wise.save_freq=2", "--param", "wise.merge_freq=4"],
    "retrieval": [],
    "locft-bf": ["--param", "locft-bf.steps=3", "--param", "locft-bf.chunk=1",
                 "--param", "locft-bf.stop_loss=0"],
    "ultraedit": [],
    "stableedit": [],  # and whether its warm-up has run
    "memoir": ["--param", "memoir.n_iter=3", "--param", "memoir.n_templates=1",
               "--param", "memoir.threshold=0.5"],
}


def _locate(name: str, extra: list[str]) -> list[str]:
    base = ["v_steps=5", "mom2_n_samples=200", *extra]
    return [arg for value in base for arg in ("--param", f"{name}.{value}")]


def _locate_and_adapters(model: Path) -> dict[str, list[str]]:
    """LyapLock's queue and drift, PRUNE's unrestrained sum and RECT's (a tight budget makes the
    queue grow); lora-ft's merged adapters and dense retrieval's index, where their extras are
    installed (the micro model serves as the dense encoder)."""
    group = {
        "lyaplock": _locate("lyaplock", ["alpha=0.5"]),
        "rect": _locate("rect", ["mom2_update_weight=1"]),
        "prune": _locate("prune", ["mom2_update_weight=1"]),
    }
    # HiEdit: its editor is trained once, by the uninterrupted run, into the shared cache; the
    # weights and normaliser statistics go through the snapshot
    group["hiedit"] = ["--param", "hiedit.max_steps=1", "--param", "hiedit.rank=8", "--param",
                       "hiedit.gate_hidden=8", "--param", "hiedit.update_normaliser_at_edit=true"]
    if importlib.util.find_spec("peft"):
        group["lora-ft"] = ["--param", "lora-ft.epochs=3", "--param", "lora-ft.chunk=1"]
    if importlib.util.find_spec("faiss"):
        dense = "retrieval@wikibigedit"
        group[dense] = [arg for value in (
            f"encoder={model}", "encoder_backend=transformers", "index=hnsw", "always=true",
            "context=qa") for arg in ("--param", f"{dense}.{value}")]
    return group


def _run(model: Path, out: Path, cache: Path, group: dict[str, list[str]],
         fault: str | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "editbench.harness.cli.group", "run", "--task", "pocket",
            "--param", "pocket.n_entities=20", "--model", str(model),
            "--methods", ",".join(group), "--edits", "6", "--batch-size", "2",
            "--checkpoints", "2,4,6", "--device", "cpu", "--gen-eval", "off", "--out", str(out),
            *(arg for settings in group.values() for arg in settings)]
    return forked.run(args, _env(cache, fault), timeout=600)


def _stored(out: Path) -> dict[str, list[int]]:
    store = load_results(out)
    try:
        table = store.checkpoints()
    finally:
        store.close()
    return {method: sorted(rows["n_edits"]) for method, rows in table.groupby("method")}


def _check_chain(tmp_path: Path, model: Path, group: dict[str, list[str]]) -> None:
    cache = tmp_path / "cache"
    clean = _run(model, tmp_path / "clean", cache, group)
    assert clean.returncode == 0, clean.stderr[-3000:]
    out = tmp_path / "out"
    methods = list(group)
    for index, method in enumerate(methods):
        # the first process stores this method's two checkpoints; a later one first stores the
        # last checkpoint of the method it resumes
        fault = f"after-checkpoint:{2 if index == 0 else 3}"
        killed = _run(model, out, cache, group, fault)
        assert killed.returncode == FAULT_EXIT, f"{method}: {killed.stderr[-3000:]}"
        stored = _stored(out)
        assert stored[method] == [2, 4], (method, stored)
        assert all(stored[done] == [2, 4, 6] for done in methods[:index]), stored
        if index:
            assert f"{methods[index - 1]}: resuming after 4 stored edits" in killed.stderr
    final = _run(model, out, cache, group)
    assert final.returncode == 0, final.stderr[-3000:]
    assert f"{methods[-1]}: resuming after 4 stored edits" in final.stderr
    assert _stored(out) == {method: [2, 4, 6] for method in methods}
    pd.testing.assert_frame_equal(scores(out), scores(tmp_path / "clean"))


@pytest.mark.slow
def test_memory_methods_and_normalisers_killed_then_resumed_equal_an_uninterrupted_run(
    tmp_path, micro_llama
):
    _check_chain(tmp_path, micro_llama, MEMORY_AND_NORMALISERS)


@pytest.mark.slow
def test_locate_then_edit_variants_and_adapters_killed_then_resumed_equal_an_uninterrupted_run(
    tmp_path, micro_llama
):
    _check_chain(tmp_path, micro_llama, _locate_and_adapters(micro_llama))
