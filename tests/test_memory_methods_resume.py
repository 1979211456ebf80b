"""Kill and resume for the methods whose lifelong state is a codebook, side memories or stored text
(and LocFT-BF's seeded shuffle): a run killed after a checkpoint and resumed scores exactly as an
uninterrupted one. Real ``editbench`` processes on a micro model, as in test_faults.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_faults import _env, checkpoints, scores

from editbench.core.faults import FAULT_EXIT

#: small settings, so each run takes seconds; every one keeps state across batches
METHODS = {
    "grace": ["--param", "grace.n_iter=3"],
    "wise": ["--param", "wise.n_iter=3", "--param", "wise.n_templates=1",
             "--param", "wise.save_freq=2", "--param", "wise.merge_freq=4"],
    "retrieval": [],
    "locft-bf": ["--param", "locft-bf.steps=3", "--param", "locft-bf.chunk=1",
                 "--param", "locft-bf.stop_loss=0"],
}


def _run(
    model: Path, out: Path, cache: Path, method: str, fault: str | None = None
) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "editbench.harness.cli.group", "run", "--task", "pocket",
            "--param", "pocket.n_entities=20", "--model", str(model), "--methods", method,
            "--edits", "6", "--batch-size", "2", "--checkpoints", "2,4,6", "--device", "cpu",
            "--gen-eval", "off", "--out", str(out), *METHODS[method]]
    return subprocess.run(args, env=_env(cache, fault), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_killed_after_a_checkpoint_then_resumed_equals_an_uninterrupted_run(
    tmp_path, micro_llama, method
):
    cache = tmp_path / "cache"
    clean = _run(micro_llama, tmp_path / "clean", cache, method)
    assert clean.returncode == 0, clean.stderr[-3000:]
    out = tmp_path / "out"
    assert _run(micro_llama, out, cache, method, "after-checkpoint:2").returncode == FAULT_EXIT
    assert checkpoints(out) == [2, 4]
    resumed = _run(micro_llama, out, cache, method)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after 4 stored edits" in resumed.stderr
    pd.testing.assert_frame_equal(scores(out), scores(tmp_path / "clean"))
