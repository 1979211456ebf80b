"""``editbench plan``'s estimates against measured peaks on micro models of each architecture (issue 17)."""

from __future__ import annotations

import pytest

from editbench.core.costs import GiB, RunShape
from editbench.harness.cost_check import FAMILIES, METHODS_CHECKED, check_family
from editbench.harness.planner import model_shape, plan_methods


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_plan_peaks_are_within_a_quarter_of_measured_peaks(family):
    """Every method but WISE (slow on CPU) on Llama's layout; the three method families on every
    architecture (the suite's time; ``editbench selfcheck`` runs every method on every architecture)."""
    methods = tuple(m for m in METHODS_CHECKED if m != "wise") if family == "llama" else ("ft-l", "memit", "mend")
    for check in check_family(family, "cpu", methods):
        assert 0.75 <= check.ratio <= 1.25, (f"{family} {check.what}: plan {check.planned / 1e6:.2f} MB, "
                                              f"measured {check.measured / 1e6:.2f} MB")


def test_the_plan_for_llama_3_8b_counts_what_the_model_holds():
    """Shapes come from the published config on the meta device: the parameter count is Llama-3-8B's."""
    shape = model_shape("tests/configs/llama-3-8b.json", "bfloat16")
    assert shape.architecture == "llama-3-8b"
    assert round(shape.n_params / 1e9, 2) == 8.03
    run = RunShape(edits=20000, batch_size=100, scored_records=20000, device_bytes=80 * GiB)
    (memit,) = plan_methods(shape, run, ["memit"])
    assert memit.cost is not None
    # resident: bf16 weights, float32 master copies of five 14336 x 4096 down_proj, five 14336^2 float32 second moments
    expected = shape.n_params * 2 + 5 * 14336 * 4096 * 4 + 5 * 14336 * 14336 * 4
    assert memit.cost.resident_bytes == expected
    assert [p.phase for p in memit.cost.phases] == ["statistics", "editing", "evaluation"]


@pytest.mark.parametrize("config", ["llama-3-8b", "mistral-7b", "qwen2.5-7b", "gemma-2-9b", "gpt-j-6b", "gpt2-xl"])
def test_every_method_plans_to_fit_a_published_model_in_bf16_on_80_gb(config):
    from editbench.methods import METHODS

    shape = model_shape(f"tests/configs/{config}.json", "bfloat16")
    run = RunShape(edits=20000, batch_size=100, scored_records=20000, device_bytes=80 * GiB)
    planned = plan_methods(shape, run, list(METHODS.names()) if hasattr(METHODS, "names") else [n for n, _ in METHODS.items()])
    assert all(p.cost is not None for p in planned), [p.label for p in planned if p.cost is None]
    assert all(p.fits(run) for p in planned), [(p.label, p.cost.peak_bytes / GiB) for p in planned if not p.fits(run)]
