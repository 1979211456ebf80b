"""The vLLM probe backend: the same scores as :class:`HFProbe`, from vLLM's ``prompt_logprobs``.

At 7-9B parameters and tens of thousands of prompts per checkpoint, evaluation dominates a
lifelong-editing run; vLLM's batching makes it several times cheaper. The engine is built once per
run and shares the GPU with the Hugging Face model that the methods edit: ``gpu_memory_utilization``
(``--vllm-memory``, default 0.4) is the share vLLM takes, the rest stays with the training model.
After each checkpoint only the tensors that the method declares it edits are sent to the engine
(``load_weights`` with Hugging Face names), never a full reload.

Supported: vLLM 0.6 to 0.11 (the ``LLM.apply_model`` / ``collective_rpc`` and older driver-worker
paths are both handled). vLLM is an optional extra (``pip install "editbench[vllm]"``); nothing
imports it unless this backend is asked for.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Sequence

import torch
from torch import nn

from .generate import answer_budget
from .probe import GenerationSettings
from .records import PairScore, ScoringPair
from .tokenize import PairEncoder

log = logging.getLogger(__name__)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def _load_weights(llm, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Push (HF name, tensor) pairs into the engine's model, whatever the vLLM version."""

    def apply(model):
        model.load_weights(weights=iter(weights))

    if hasattr(llm, "apply_model"):  # vLLM >= 0.8
        llm.apply_model(apply)
        return
    executor = llm.llm_engine.model_executor
    apply(executor.driver_worker.model_runner.model)  # vLLM 0.6 / 0.7


class VLLMProbe:
    """Scores (prompt, target) pairs with a vLLM engine that mirrors the edited model's weights."""

    def __init__(self, model_source: str, tokenizer, dtype: torch.dtype, gpu_memory_utilization: float = 0.4,
                 trust_remote_code: bool = False) -> None:
        if not vllm_available():
            raise RuntimeError("--probe-backend vllm needs `pip install \"editbench[vllm]\"` and a CUDA GPU")
        from vllm import LLM

        self.llm = LLM(model=str(model_source), dtype=str(dtype).removeprefix("torch."),
                       gpu_memory_utilization=gpu_memory_utilization, trust_remote_code=trust_remote_code,
                       enable_prefix_caching=True, seed=0)
        self.encoder = PairEncoder(tokenizer)
        self._dirty: set[str] = set()  # tensors that differ from the base checkpoint in the engine
        self.forward_seconds = 0.0

    def sync(self, model: nn.Module, names: Sequence[str]) -> None:
        """Send ``names`` (and whatever an earlier method changed) from ``model`` to the engine."""
        wanted = sorted(self._dirty | set(names))
        if wanted:
            _load_weights(self.llm, [(n, model.get_parameter(n).detach()) for n in wanted])
        self._dirty = set(names)

    def score(self, pairs: Sequence[ScoringPair]) -> list[PairScore]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        encoded = self.encoder.encode_many([(p.prompt, p.target) for p in pairs])
        params = SamplingParams(max_tokens=1, prompt_logprobs=1, temperature=0.0)
        started = time.perf_counter()
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(e.ids)) for e in encoded], params,
                                    use_tqdm=False)
        self.forward_seconds += time.perf_counter() - started
        results = []
        for enc, out in zip(encoded, outputs, strict=True):
            logprob, correct, predictions = 0.0, 0, []
            for position in range(enc.n_prompt, len(enc.ids)):
                entry = out.prompt_logprobs[position]  # token id -> Logprob(logprob, rank)
                token = enc.ids[position]
                logprob += entry[token].logprob
                top = min(entry.items(), key=lambda item: item[1].rank)[0]
                predictions.append(top)
                correct += int(top == token)
            n = len(enc.ids) - enc.n_prompt
            results.append(PairScore(correct / n, logprob, n, tuple(predictions)))
        return results

    def generate(self, prompts: Sequence[str], settings: GenerationSettings) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=settings.max_new_tokens, top_k=settings.top_k if settings.top_k > 1 else -1,
                                temperature=1.0 if settings.top_k > 1 else 0.0, seed=settings.seed)
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        return [prompt + out.outputs[0].text for prompt, out in zip(prompts, outputs, strict=True)]

    def generate_answers(self, pairs: Sequence[ScoringPair], max_new_tokens: int) -> list[str]:
        """Greedy decoding with the HF backend's stop rules: the model's end-of-sequence tokens (vLLM's
        default) and a newline (``stop``), each request with its own ``answer_budget``. One
        difference: vLLM cuts the text at the newline inside a token, the HF backend drops the
        whole token; for tokenizers whose newline tokens hold nothing else the two agree."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        encoded = self.encoder.encode_many([(p.prompt, p.target) for p in pairs])
        params = [SamplingParams(temperature=0.0, max_tokens=answer_budget(e.n_target, max_new_tokens), stop=["\n"])
                  for e in encoded]
        prompts = [TokensPrompt(prompt_token_ids=list(e.ids[: e.n_prompt])) for e in encoded]
        started = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        self.forward_seconds += time.perf_counter() - started
        return [out.outputs[0].text for out in outputs]
