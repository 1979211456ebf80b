"""``editbench plan``'s estimates against measured peaks on micro models of each architecture (issue 17)."""

from __future__ import annotations

import pytest

from editbench.core.costs import GiB, RunShape
from editbench.harness.cost_check import FAMILIES, check_family
from editbench.harness.planner import model_shape, plan_methods


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_plan_peaks_are_within_a_quarter_of_measured_peaks(family):
    for check in check_family(family, "cpu"):
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
