"""A stand-in ``vllm`` module for the tests of the vLLM probe backend, with the API surface of the
releases it supports as ``docs/notes/vllm-versions.md`` records them, computing with a Hugging
Face copy of the model on CPU (so its scores can be compared with ``HFProbe``'s).

What each release does that the backend must get right:
- 0.6.x: no ``apply_model``, ``collective_rpc`` or ``reset_prefix_cache``; the model is
  ``llm_engine.model_executor.driver_worker.model_runner.model``; prefix caching off by default and
  refused (an assertion) for requests with ``prompt_logprobs``.
- 0.8.x: V1; the engine core runs in another process unless ``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
  and only in-process does ``llm_engine`` have ``model_executor`` (``LLM.apply_model`` reads it:
  AttributeError otherwise).
- 0.9 and later: ``LLM.apply_model`` goes through ``collective_rpc``; out of process a function
  argument is refused (TypeError) unless ``VLLM_ALLOW_INSECURE_SERIALIZATION=1``.
- 0.8 and later: prefix caching on unless ``enable_prefix_caching=False``; requests with
  ``prompt_logprobs`` skip reading the cache but write it; ``reset_prefix_cache`` empties it.
  A cache hit here computes the whole request with the weights of the moment the cached prefix
  was written (in vLLM only the cached positions are stale; the effect, stale outputs, is the same).
- building an engine in-process re-seeds the global generators (``seed``).
"""

from __future__ import annotations

import importlib.machinery
import os
import random
import sys
import types
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
from torch.func import functional_call

from editbench.core.models import load_model

BLOCK = 16

#: SamplingParams fields each release accepts (from its sampling_params.py), the ones tests touch
COMMON_FIELDS = {
    "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature", "top_p",
    "top_k", "min_p", "seed", "stop", "stop_token_ids", "ignore_eos", "max_tokens", "min_tokens",
    "logprobs", "prompt_logprobs", "detokenize", "skip_special_tokens", "include_stop_str_in_output"
}


@dataclass(frozen=True)
class Release:
    version: str
    v1: bool  # engine core out of process by default, prefix caching on by default
    apply_model: str  # "none" | "executor" (0.8: reads llm_engine.model_executor) | "rpc" (0.9+)
    top_k_off: int  # the value of top_k meaning "no limit"


RELEASES = {
    "0.6.3": Release("0.6.3", v1=False, apply_model="none", top_k_off=-1),
    "0.8.5": Release("0.8.5", v1=True, apply_model="executor", top_k_off=-1),
    "0.11.0": Release("0.11.0", v1=True, apply_model="rpc", top_k_off=0),
    "0.33.0": Release("0.33.0", v1=True, apply_model="rpc", top_k_off=0),
}


@dataclass
class Logprob:
    logprob: float
    rank: int
    decoded_token: str | None = None


class EngineModel(torch.nn.Module):
    """The engine's copy of the model, with vLLM's ``load_weights`` (Hugging Face names)."""

    def __init__(self, hf: torch.nn.Module, reports_loaded: bool) -> None:
        super().__init__()
        self.hf = hf
        self.reports_loaded = reports_loaded
        self.loads = 0

    def load_weights(self, weights):
        loaded = set()
        with torch.no_grad():
            for name, tensor in weights:
                self.hf.get_parameter(name).copy_(tensor)
                loaded.add(name)
        self.loads += 1
        return loaded if self.reports_loaded else None


def make_module(version: str, loaded: list) -> types.ModuleType:
    """The ``vllm`` module of ``version``; every LLM built is appended to ``loaded``."""
    release = RELEASES.get(version, Release(version, v1=True, apply_model="rpc", top_k_off=0))

    class SamplingParams:
        def __init__(self, **kwargs) -> None:
            unknown = set(kwargs) - COMMON_FIELDS
            if unknown:
                raise TypeError(f"SamplingParams got unexpected {sorted(unknown)}")
            self.temperature, self.top_p, self.top_k, self.seed = 1.0, 1.0, release.top_k_off, None
            self.max_tokens, self.stop_token_ids, self.prompt_logprobs, self.ignore_eos = (
                16, None, None, False
            )
            self.repetition_penalty, self.min_p, self.stop = 1.0, 0.0, None
            for key, value in kwargs.items():
                setattr(self, key, value)

    class Executor:
        def __init__(self, model: EngineModel) -> None:
            self.driver_worker = SimpleNamespace(model_runner=SimpleNamespace(model=model))

        def apply_model(self, func):
            return [func(self.driver_worker.model_runner.model)]

    class Engine:
        def __init__(self, model: EngineModel, in_process: bool) -> None:
            self.in_process = in_process
            if in_process:
                self.model_executor = Executor(model)
            self._model = model

        def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
            sends_function = callable(method) or any(callable(a) for a in args)
            if (
                sends_function
                and not self.in_process
                and os.environ.get("VLLM_ALLOW_INSECURE_SERIALIZATION") != "1"
            ):
                raise TypeError(
                    "Object of type function is not serializable; "
                    "set VLLM_ALLOW_INSECURE_SERIALIZATION=1"
                )
            if method == "apply_model":
                return [args[0](self._model)]
            raise NotImplementedError(method)

    class LLM:
        def __init__(
            self, model: str, dtype: str = "auto", seed: int = 0,
            enable_prefix_caching: bool | None = None, max_model_len: int | None = None,
            gpu_memory_utilization: float = 0.9, trust_remote_code: bool = False, **rest
        ) -> None:
            self.kwargs = dict(
                model=model, dtype=dtype, seed=seed, enable_prefix_caching=enable_prefix_caching,
                max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                trust_remote_code=trust_remote_code, **rest
            )
            in_process = (
                not release.v1 or os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "0"
            )
            self.environment = {k: os.environ.get(k) for k in ("VLLM_ENABLE_V1_MULTIPROCESSING",
                                                               "VLLM_ALLOW_INSECURE_SERIALIZATION")}
            hf, self.tokenizer = load_model(model, torch.device("cpu"), torch.float32)
            self.model = EngineModel(hf, reports_loaded=release.v1)
            self.llm_engine = Engine(self.model, in_process)
            self.caching = release.v1 if enable_prefix_caching is None else enable_prefix_caching
            self.max_model_len = max_model_len or hf.config.max_position_embeddings
            # full-block prefix -> weights then
            self.cache: dict[tuple[int, ...], dict[str, torch.Tensor]] = {}
            self.requests: list[tuple[list[int], SamplingParams]] = []
            random.seed(seed)  # what vLLM's in-process worker does
            np.random.seed(seed)
            torch.manual_seed(seed)
            loaded.append(self)

        if release.apply_model == "executor":
            def apply_model(self, func):
                # AttributeError out of process
                return self.llm_engine.model_executor.apply_model(func)
        elif release.apply_model == "rpc":
            def apply_model(self, func):
                return self.llm_engine.collective_rpc("apply_model", args=(func,))

        if release.v1:
            def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
                return self.llm_engine.collective_rpc(method, timeout, args, kwargs)

            def reset_prefix_cache(self, *args, **kwargs) -> bool:
                self.cache.clear()
                return True

        # -- requests --------------------------------------------------------------------------
        def generate(self, prompts, sampling_params=None, use_tqdm=True, **kwargs):
            params = (
                sampling_params
                if isinstance(sampling_params, list)
                else [sampling_params] * len(prompts)
            )
            return [
                self._one(prompt["prompt_token_ids"], p)
                for prompt, p in zip(prompts, params, strict=True)
            ]

        def _weights_for(self, ids: list[int], reads: bool) -> dict[str, torch.Tensor] | None:
            """Weights a cached prefix was computed with (None: the current ones); writes the
            cache."""
            if not self.caching:
                return None
            blocks = [tuple(ids[: BLOCK * n]) for n in range(len(ids) // BLOCK, 0, -1)]
            stale = (
                next((self.cache[key] for key in blocks if key in self.cache), None)
                if reads
                else None
            )
            current = {k: v.clone() for k, v in self.model.hf.state_dict().items()}
            for key in blocks:
                self.cache.setdefault(key, current)
            return stale

        def _logits(self, ids: list[int], weights) -> torch.Tensor:
            model = self.model.hf
            with torch.no_grad():
                if weights is None:
                    return model(input_ids=torch.tensor([ids])).logits[0]
                return functional_call(
                    model, weights, (), {"input_ids": torch.tensor([ids])}
                ).logits[0]

        def _one(self, ids: list[int], params: SamplingParams):
            ids = list(ids)
            self.requests.append((ids, params))
            if len(ids) > self.max_model_len:
                raise ValueError(
                    f"prompt length {len(ids)} is longer than max_model_len {self.max_model_len}"
                )
            if params.prompt_logprobs is not None and self.caching and not release.v1:
                raise AssertionError("prefix caching is not supported with prompt_logprobs")
            weights = self._weights_for(ids, reads=params.prompt_logprobs is None)
            prompt_logprobs = None
            if params.prompt_logprobs is not None:
                logprobs = torch.log_softmax(self._logits(ids, weights).float(), -1)
                prompt_logprobs = [None]
                for position in range(1, len(ids)):
                    row, token = logprobs[position - 1], ids[position]
                    top = int(row.argmax())
                    entry = {token: Logprob(float(row[token]), 1 + int((row > row[token]).sum()))}
                    entry[top] = Logprob(float(row[top]), 1)
                    prompt_logprobs.append(entry)
            stops = set(params.stop_token_ids or ())
            if not params.ignore_eos:
                stops.add(self.tokenizer.eos_token_id)
            generator = torch.Generator().manual_seed(params.seed if params.seed is not None else 0)
            new: list[int] = []
            while len(new) < params.max_tokens and len(ids) + len(new) < self.max_model_len:
                row = self._logits(ids + new, weights)[-1].float()
                if params.temperature == 0:
                    token = int(row.argmax())
                else:
                    k = params.top_k if params.top_k > 0 else row.numel()
                    values, indices = row.topk(k)
                    token = int(indices[torch.multinomial(
                        torch.softmax(values / params.temperature, -1), 1, generator=generator
                    )])
                new.append(token)
                if token in stops:
                    break
            text = self.tokenizer.decode(
                [t for t in new if t not in stops], skip_special_tokens=True
            )
            return SimpleNamespace(prompt_token_ids=ids, prompt_logprobs=prompt_logprobs,
                                   outputs=[SimpleNamespace(text=text, token_ids=tuple(new))])

    module = types.ModuleType("vllm")
    module.__version__ = version
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.LLM, module.SamplingParams = LLM, SamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.__spec__ = importlib.machinery.ModuleSpec("vllm.inputs", None)
    inputs.TokensPrompt = lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids}
    module.inputs = inputs
    return module


def install(monkeypatch, version: str) -> list:
    """Put the fake ``vllm`` of ``version`` in ``sys.modules``; returns the list of LLMs it
    builds."""
    loaded: list = []
    module = make_module(version, loaded)
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", module.inputs)
    return loaded
