"""``editbench plan``'s estimates against measured peaks on micro models of each architecture
(issue 17)."""

from __future__ import annotations

import pytest

from editbench.core.costs import GiB, RunShape
from editbench.harness.checks.cost_check import FAMILIES, check_family, checked_methods
from editbench.harness.plan.estimate import estimate_methods, model_shape


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_plan_peaks_are_within_a_quarter_of_measured_peaks(family):
    """Every method but WISE (slow on CPU) on Llama's layout; the three method families on every
    architecture (the suite's time; ``editbench selfcheck`` runs every method on every
    architecture)."""
    methods = (tuple(m for m in checked_methods() if m != "wise") if family == "llama"
               else ("ft-l", "memit", "mend"))
    for check in check_family(family, "cpu", methods):
        assert 0.75 <= check.ratio <= 1.25, (
            f"{family} {check.what}: plan {check.planned / 1e6:.2f} MB, "
            f"measured {check.measured / 1e6:.2f} MB"
        )


def test_the_plan_for_llama_3_8b_counts_what_the_model_holds():
    """Shapes come from the published config on the meta device: the parameter count is
    Llama-3-8B's."""
    shape = model_shape("tests/configs/llama-3-8b.json", "bfloat16")
    assert shape.architecture == "llama-3-8b"
    assert round(shape.n_params / 1e9, 2) == 8.03
    run = RunShape(edits=20000, batch_size=100, scored_records=20000, device_bytes=80 * GiB)
    (memit,) = estimate_methods(shape, run, ["memit"])
    assert memit.cost is not None
    # on the device: bf16 weights, float32 master copies of five 14336 x 4096 down_proj; in host
    # memory five 14336^2 float32 second moments (an H200 measured 19.76 GiB when the plan counted
    # them on the device)
    assert memit.cost.resident_bytes == shape.n_params * 2 + 5 * 14336 * 4096 * 4
    assert memit.cost.host_bytes == 5 * 14336 * 14336 * 4
    assert [p.phase for p in memit.cost.phases] == ["statistics", "editing", "evaluation"]


@pytest.mark.parametrize("config", [
    "llama-3-8b",
    "mistral-7b",
    "qwen2.5-7b",
    "gemma-2-9b",
    "gpt-j-6b",
    "gpt2-xl",
])
def test_every_method_plans_to_fit_a_published_model_in_bf16_on_80_gb(config):
    from editbench.methods import METHODS

    shape = model_shape(f"tests/configs/{config}.json", "bfloat16")
    run = RunShape(edits=20000, batch_size=100, scored_records=20000, device_bytes=80 * GiB)
    planned = estimate_methods(shape, run, [name for name, _ in METHODS.items()])
    # cost() is optional in the protocol (tests/test_runner.py); every built-in method has one
    assert all(p.cost is not None for p in planned), [p.label for p in planned if p.cost is None]
    assert all(p.fits(run) for p in planned), [
        (p.label, p.cost.peak_bytes / GiB) for p in planned if not p.fits(run)
    ]


def test_key_statistics_are_planned_in_host_memory_and_counted_where_host_memory_is_the_devices(
        tmp_path, micro_llama, monkeypatch):
    """An H200 measured MEMIT at 8B below the plan's resident memory: the statistics live on the
    host. The plan prints them apart; a CPU run, whose one memory holds both, counts them in its
    peak."""
    from conftest import write_edits

    from editbench.harness.plan import estimate
    from editbench.harness.plan.estimate import plan_table
    from editbench.harness.plan.resolve import resolve
    from editbench.harness.plan.settings import RunSpec

    shape = model_shape("tests/configs/llama-3-8b.json", "bfloat16")
    run = RunShape(edits=20000, batch_size=100, scored_records=20000, device_bytes=80 * GiB)
    planned = estimate_methods(shape, run, ["memit", "ft-m"])
    assert planned[1].cost.host_bytes == 0
    assert (
        "Host memory besides (key statistics, not on the device): memit 3.8 GiB"
        in plan_table(shape, run, planned)
    )

    seen = []
    monkeypatch.setattr(
        estimate,
        "estimate_methods",
        lambda *a, **kw: seen.extend(estimate_methods(*a, **kw)) or seen,
    )
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Kalo Mirve lives in Fengal Vale.\n" * 20)
    spec = RunSpec(
        task="jsonl", data=str(write_edits(tmp_path / "edits.jsonl", 8)), model=str(micro_llama),
        edits=8, batch_size=4, out=tmp_path / "out", device="cpu", cache_dir=tmp_path / "cache",
        gen_eval=False, methods=("memit",), params={"memit": {"stats_corpus": str(corpus)}}
    )
    plan = resolve(spec)
    (memit,) = seen
    assert memit.cost.host_bytes > 0
    assert plan.planned_peak("memit") == memit.cost.peak_bytes + memit.cost.host_bytes
