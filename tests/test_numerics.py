"""The kernels, threads and flags a run's numbers were computed under: stored, shown, compared.

Scores move slightly with the CPU's kernel set and the thread count (issue 26), so a store must say
which were used; a resume under others says so in one line; the thread count is the user's choice
or the model's, never a share that depends on what else runs.
"""

from __future__ import annotations

import logging
import os

import pytest
import torch

from editbench.core.numerics import current_numerics, describe_numerics, numerics_difference
from editbench.core.store import load_results
from editbench.harness.plan.resolve import resolve
from editbench.harness.plan.settings import RunSpec
from editbench.harness.running import runner as runner_module
from editbench.harness.running import threads
from editbench.harness.running.runner import Runner

POCKET = {"pocket": {"n_entities": "20"}}


def _spec(tmp_path, model, **kw):
    base = dict(
        methods=("ft-l",),
        task="pocket",
        model=str(model),
        edits=4,
        batch_size=2,
        checkpoints="2,4",
        out=tmp_path / "out",
        params={**POCKET, "ft-l": {"steps": "2"}},
        device="cpu",
        cache_dir=tmp_path / "cache",
        gen_eval=False,
    )
    base.update(kw)
    return RunSpec(**base)


def test_numerics_name_the_kernels_threads_and_flags():
    numerics = current_numerics(torch.device("cpu"))
    assert numerics["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert numerics["threads"] == torch.get_num_threads()
    assert numerics["deterministic"] is torch.are_deterministic_algorithms_enabled()
    other = {**numerics, "threads": numerics["threads"] + 1, "cpu_capability": "AVX2"}
    change = numerics_difference(numerics, other)
    assert f"threads {numerics['threads']} -> {numerics['threads'] + 1}" in change
    assert ("cpu_capability" in change) is (numerics["cpu_capability"] != "AVX2")
    assert numerics_difference(numerics, dict(numerics)) is None
    assert describe_numerics(other).startswith("AVX2 kernels, ")


def test_a_run_stores_its_numerics_and_a_resume_under_other_threads_says_so(
    tmp_path, micro_llama, monkeypatch, caplog
):
    monkeypatch.setattr(
        threads, "_explicit", True
    )  # as --threads N: the run keeps the count it is given
    before = torch.get_num_threads()
    original = Runner._checkpoint

    def stop_at_four(self, store, plan, baseline, probe, method, n_edits, *rest):
        if n_edits == 4:
            raise RuntimeError("stopped for the test")
        return original(self, store, plan, baseline, probe, method, n_edits, *rest)

    try:
        torch.set_num_threads(1)
        with monkeypatch.context() as patch:
            patch.setattr(Runner, "_checkpoint", stop_at_four)
            assert not Runner(resolve(_spec(tmp_path, micro_llama))).run().ok
        torch.set_num_threads(2)
        with caplog.at_level(logging.WARNING, logger=runner_module.__name__):
            assert Runner(resolve(_spec(tmp_path, micro_llama))).run().ok
    finally:
        torch.set_num_threads(before)
    warnings = [r.getMessage() for r in caplog.records if "other numerics" in r.getMessage()]
    assert (
        len(warnings) == 1 and "threads 1 -> 2" in warnings[0] and warnings[0].startswith("ft-l:")
    )
    store = load_results(tmp_path / "out")
    sessions = store.sessions()
    assert list(sessions["method"]) == ["", "ft-l", "ft-l"]
    assert [n["threads"] for n in sessions["numerics"]] == [1, 1, 2]
    assert {n["cpu_capability"] for n in sessions["numerics"]} == {
        torch.backends.cpu.get_cpu_capability()
    }


def test_the_run_page_shows_the_numerics(tmp_path, micro_llama, monkeypatch):
    from editbench.reports.collect import collect
    from editbench.reports.site import run_views

    monkeypatch.setattr(threads, "_explicit", True)
    assert Runner(resolve(_spec(tmp_path, micro_llama))).run().ok
    (view,) = run_views(collect([tmp_path / "out"])).values()
    assert len(view.numerics) == 1
    assert view.numerics[0]["methods"] == ["(unedited baseline)", "ft-l"]
    assert f"{torch.backends.cpu.get_cpu_capability()} kernels" in view.numerics[0]["summary"]


def test_other_processes_change_how_threads_wait_never_how_many_there_are(monkeypatch):
    """The CLI once gave each process a share of the cores when it saw other editbench processes:
    the same command then scored differently beside a test suite. Beside others now only OpenMP's
    wait policy changes (speed, not rounding), and not where the user chose one."""
    from click.testing import CliRunner

    import editbench.harness.cli.group as cli

    assert cli.wait_policy(1, {}) == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert cli.wait_policy(3, {"OMP_WAIT_POLICY": "ACTIVE"}) == {}
    assert cli.wait_policy(0, {}) == {}
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_explicit", None)
    assert CliRunner().invoke(cli.main, ["list"]).exit_code == 0
    assert "OMP_NUM_THREADS" not in os.environ


@pytest.mark.parametrize("variable", ["ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS"])
def test_kernel_variables_are_recorded_where_set(monkeypatch, variable):
    monkeypatch.setenv(variable, "AVX2")
    numerics = current_numerics(torch.device("cpu"))
    assert numerics["environment"][variable] == "AVX2"
    assert f"{variable}=AVX2" in describe_numerics(numerics)
