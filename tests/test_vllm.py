"""vLLM backend parity with the Hugging Face backend (GPU only; skips cleanly elsewhere)."""

import pytest
import torch

from editbench.core.models import load_model
from editbench.core.probe import HFProbe
from editbench.core.probe_vllm import VLLMProbe, vllm_available
from editbench.core.records import EditRecord, ScoringPair

pytestmark = pytest.mark.skipif(not vllm_available(), reason="vLLM backend needs `pip install \"editbench[vllm]\"` "
                                "and a CUDA GPU; neither is required for the rest of editbench")

LOGPROB_TOLERANCE = 2e-3  # float32 on both sides; kernels differ (paged attention vs eager)


def test_hf_and_vllm_agree_before_and_after_an_edit(micro_llama):
    from editbench.core.models import ModelLayout
    from editbench.methods import EditContext
    from editbench.methods.ft import FTM, FTConfig

    device = torch.device("cuda")
    model, tokenizer = load_model(micro_llama, device, torch.float32)
    hf = HFProbe(model, tokenizer, device)
    engine = VLLMProbe(str(micro_llama), tokenizer, torch.float32, gpu_memory_utilization=0.3)
    pairs = [ScoringPair(f"Fact: Kalo Mirve{i} lives in", "Fengal Vale") for i in range(20)]

    def compare():
        for a, b in zip(hf.score(pairs), engine.score(pairs), strict=True):
            assert a.predictions == b.predictions and a.token_accuracy == b.token_accuracy
            assert a.logprob == pytest.approx(b.logprob, abs=LOGPROB_TOLERANCE)

    compare()
    ctx = EditContext(model=model, tokenizer=tokenizer, layout=ModelLayout.of(model), device=device,
                      cache_dir=micro_llama, task=None, seed=0, generator=torch.Generator().manual_seed(0))
    method = FTM(FTConfig(lr=2e-2, steps=50, norm_constraint=10.0), ctx)
    method.apply([EditRecord(uid="0", prompt=pairs[0].prompt, subject="Kalo Mirve0", target_new="Fengal Vale")])
    engine.sync(model, method.edited_parameters())
    compare()
