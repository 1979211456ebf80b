import os
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass

import forked
import pandas as pd
import pytest
import torch
from test_faults import _env

from editbench.core.store import load_results
from editbench.harness.plan.resolve import resolve
from editbench.harness.plan.settings import RunSpec
from editbench.harness.running.runner import Runner
from editbench.methods import METHODS, EditMethod, MethodConfig

POCKET = {"pocket": {"n_entities": "20"}}
SEEN: dict[str, list[list[str]]] = {}


@dataclass(frozen=True)
class RecorderConfig(MethodConfig):
    nan_after: int = 0  # poison the weights once this many edits were applied (0: never)


class Recorder(EditMethod):
    """Edits nothing; remembers the batches it was given."""

    description = "test double"
    Config = RecorderConfig

    def apply(self, batch):
        seen = SEEN.setdefault(self.name, [])
        seen.append([r.uid for r in batch])
        if self.config.nan_after and sum(map(len, seen)) >= self.config.nan_after:
            with torch.no_grad():
                self.ctx.parameter(self.edited_parameters()[0]).fill_(float("nan"))

    def edited_parameters(self):
        return [f"{self.ctx.layout.mlp_out_name(0)}.weight"]


@pytest.fixture
def recorders():
    SEEN.clear()
    added = []
    for name in ("rec-a", "rec-b"):
        cls = type(name, (Recorder,), {"name": name})
        METHODS.register(name)(cls)
        added.append(name)
    yield
    for name in added:
        METHODS._items.pop(name)


def _spec(tmp_path, model, **kw):
    base = dict(
        task="pocket", model=str(model), edits=20, batch_size=4, out=tmp_path / "out",
        params=POCKET, device="cpu", cache_dir=tmp_path / "cache"
    )
    base.update(kw)
    return RunSpec(**base)


def test_every_method_sees_the_same_edits_in_the_same_batches(tmp_path, micro_llama, recorders):
    outcome = Runner(resolve(
        _spec(tmp_path, micro_llama, methods=("rec-a", "rec-b"), checkpoints="6,20")
    )).run()
    assert outcome.ok
    assert SEEN["rec-a"] == SEEN["rec-b"]
    assert [len(b) for b in SEEN["rec-a"]] == [4, 2, 4, 4, 4, 2]  # cut at the checkpoint 6
    assert len({u for b in SEEN["rec-a"] for u in b}) == 20
    SEEN.clear()
    Runner(resolve(
        _spec(tmp_path, micro_llama, methods=("rec-a",), seed=1, out=tmp_path / "other")
    )).run()
    assert SEEN["rec-a"] != SEEN.get("rec-b", [])  # another seed, another order


def test_a_diverging_method_is_recorded_and_the_others_go_on(tmp_path, micro_llama, recorders):
    spec = _spec(tmp_path, micro_llama, methods=("rec-a", "ft-m"), checkpoints="4,10,20",
                 params={**POCKET, "rec-a": {"nan_after": "8"}})
    outcome = Runner(resolve(spec)).run()
    assert outcome.statuses == {"rec-a": "diverged", "ft-m": "done"}
    assert outcome.ok  # divergence is a result, stored like any other
    store = load_results(spec.out)
    cells = store.cells().set_index("method")
    assert cells.loc["rec-a", "diverged_at"] == 8
    assert set(store.checkpoints().query("method == 'ft-m'")["n_edits"]) == {4, 10, 20}


def test_a_method_without_a_cost_model_plans_and_runs(tmp_path, micro_llama, recorders):
    """``cost()`` is optional in the method protocol: the plan says the method has no cost model,
    nothing stops the run, and it runs (the built-in methods all have one: tests/test_costs.py)."""
    from editbench.harness.cli.run import format_plan
    from editbench.harness.plan.preflight import preflight

    plan = resolve(
        _spec(tmp_path, micro_llama, methods=("rec-a", "ft-m"), edits=4, checkpoints="4")
    )
    costs = {item.label: item.cost for item in plan.estimates}
    assert costs["rec-a"] is None and costs["ft-m"] is not None
    assert preflight(plan) == [] and plan.planned_peak("rec-a") is None
    assert "no cost model" in format_plan(plan, [])
    assert Runner(plan).run().ok


def test_results_carry_metadata_and_eval_sample(tmp_path, micro_gpt2):
    spec = _spec(tmp_path, micro_gpt2, methods=("ft-l",), eval_sample=6, checkpoints="20")
    Runner(resolve(spec)).run()
    store = load_results(spec.out)
    run = store.runs().iloc[0]
    assert run["versions"]["torch"] == torch.__version__
    assert run["dataset_hash"] and run["device"].startswith("cpu")
    assert "pre_edit_accuracy" in run["baseline"]
    positions = sorted(store.per_edit()["position"])
    assert len(positions) == 6 and positions[0] == 0 and positions[-1] == 19
    phases = set(store.timings()["phase"])
    assert {"baseline", "load", "prepare", "edit", "eval"} <= phases


def test_bad_input_names_the_option(tmp_path, micro_llama):
    with pytest.raises(ValueError, match="--edits 999"):
        Runner(resolve(_spec(tmp_path, micro_llama, edits=999)))
    with pytest.raises(KeyError, match="registered methods: .*ft-m"):
        Runner(resolve(_spec(tmp_path, micro_llama, methods=("nope",))))
    with pytest.raises(ValueError, match="method ft-m has no setting 'lrr'"):
        Runner(resolve(_spec(
            tmp_path, micro_llama, methods=("ft-m",), params={**POCKET, "ft-m": {"lrr": "1"}}
        )))


def _cli(*args):
    return [sys.executable, "-m", "editbench.harness.cli.group", "run", *args]


def test_kill_minus_nine_then_rerun_equals_an_uninterrupted_run(tmp_path, micro_llama):
    args = ["--task", "pocket", "--param", "pocket.n_entities=20", "--model", str(micro_llama),
            "--methods", "ft-m,ft-l", "--jobs", "1", "--edits", "24", "--batch-size", "2",
            "--checkpoints", ",".join(str(n) for n in range(4, 25, 4)), "--device", "cpu",
            "--param", "ft-m.stop_loss=0", "--param", "ft-l.stop_loss=0"]
    env = _env(tmp_path / "cache")
    killed_out, clean_out = tmp_path / "killed", tmp_path / "clean"
    # forked from a process that imported torch once (tests/forked.py)
    proc = forked.start(_cli(*args, "--out", str(killed_out)), env)
    db = killed_out / "results.sqlite"
    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    stored = conn.execute("SELECT COUNT(*) FROM checkpoints").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0
            if stored >= 3:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 3 <= stored < 12
    resumed = forked.run(_cli(*args, "--out", str(killed_out)), env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    clean = forked.run(_cli(*args, "--out", str(clean_out)), env)
    assert clean.returncode == 0, clean.stderr

    def scores(folder):
        return load_results(folder).scores().drop(columns="run_id").sort_values(
            ["method", "n_edits", "position", "metric"]).reset_index(drop=True)

    a, b = scores(killed_out), scores(clean_out)
    # 4 teacher-forced, 2 x 2 locality sets, portability, and 5 + 1 generated metrics: no
    # duplicates, nothing lost
    assert len(a) == len(b) == 2 * sum(range(4, 25, 4)) * 15
    pd.testing.assert_frame_equal(a, b)
    assert len(load_results(killed_out).checkpoints()) == 12


def test_progress_off_a_terminal_is_log_lines_with_an_estimate(caplog, monkeypatch):
    from editbench.core import progress as module

    monkeypatch.delenv("EDITBENCH_NO_PROGRESS", raising=False)
    monkeypatch.setenv("EDITBENCH_PROGRESS_EVERY", "0")
    monkeypatch.setattr(module.sys.stderr, "isatty", lambda: False, raising=False)
    with caplog.at_level("INFO", logger="editbench.core.progress"):
        bar = module.progress(total=4, desc="training x", unit="step")
        assert isinstance(bar, module.LoggedProgress)
        for _ in range(4):
            bar.update(1)
        bar.close()
        assert list(module.progress(range(3), desc="walk", unit="item")) == [0, 1, 2]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("training x: 1/4 steps (25%),") and "to go" in lines[0]
    assert lines[3].startswith("training x: 4/4 steps (100%)") and "to go" not in lines[3]
    assert len(lines) == 4 + 3  # one per update at interval 0, and close repeats none


def test_progress_can_be_made_log_lines_on_a_terminal(monkeypatch):
    """``EDITBENCH_PROGRESS=log``, which a run's side-by-side workers set: bars from two processes
    would overwrite each other on one terminal."""
    from editbench.core import progress as module

    monkeypatch.delenv("EDITBENCH_NO_PROGRESS", raising=False)
    monkeypatch.setattr(module.sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setenv("EDITBENCH_PROGRESS", "log")
    assert isinstance(module.progress(total=2, desc="x"), module.LoggedProgress)
    monkeypatch.delenv("EDITBENCH_PROGRESS")
    assert not isinstance(module.progress(total=2, desc="x"), module.LoggedProgress)


def test_every_checkpoint_logs_a_line_with_elapsed_time_and_what_is_left(
    tmp_path, micro_llama, caplog
):
    spec = RunSpec(methods=("ft-l",), task="pocket", model=str(micro_llama), edits=8, batch_size=4,
                   out=tmp_path / "out", params=POCKET, device="cpu", cache_dir=tmp_path,
                   gen_eval=False)
    with caplog.at_level("INFO", logger="editbench.harness.running.runner"):
        assert Runner(resolve(spec)).run().ok
    lines = [r.getMessage() for r in caplog.records if "checkpoint stored" in r.getMessage()]
    assert (
        len(lines) == 2
        and lines[0].startswith("ft-l: 5 of 8 edits, checkpoint stored (efficacy_acc ")
    )
    assert "s so far, about" in lines[0]
