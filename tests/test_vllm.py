"""vLLM backend parity with the Hugging Face backend on a real engine (GPU only; skips cleanly
elsewhere). The same checks run on CPU against stand-ins for each supported release in
``test_vllm_backend.py``."""

import pytest
from conftest import tiny_world

from editbench.core.micro import MicroModel, build_micro_model
from editbench.core.probe_vllm import vllm_unavailable_reason
from editbench.harness.checks.vllm_parity import vllm_parity

REASON = vllm_unavailable_reason()
pytestmark = pytest.mark.skipif(
    REASON is not None, reason=f"{REASON}; the rest of editbench needs neither"
)

#: head size 32 (128 / 4 heads): vLLM's attention kernels do not all take the micro models' 16
PARITY_MODEL = MicroModel(hidden=128, layers=2, vocab=400, max_positions=256)


def test_hf_and_vllm_agree_through_an_edit_and_its_restore(tmp_path):
    source = build_micro_model(
        tmp_path / "parity-model", tiny_world().training_sentences(), PARITY_MODEL
    )
    report = vllm_parity(source)
    assert report.problems() == [], "\n".join(report.lines())
