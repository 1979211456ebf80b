"""The vLLM probe backend: the same scores and generations as :class:`HFProbe`, from a vLLM engine.

At 7-9B parameters and tens of thousands of prompts per checkpoint, evaluation dominates a
lifelong-editing run; vLLM's batching makes it several times cheaper. The engine is built once per
run and shares the GPU with the Hugging Face model that the methods edit: ``gpu_memory_utilization``
(``--vllm-memory``, default 0.4) is the share vLLM takes, the rest stays with the training model.
After each checkpoint only the tensors the method declares it edits (and those an earlier sync
changed, so they are restored) are sent to the engine, never a full reload.

Supported: vLLM ``>=0.6.3,<0.34`` (read against 0.6.3, 0.8.5, 0.11.0 and 0.33.0; the facts, with
file and line, are in ``docs/notes/vllm-versions.md``). What makes it right on each of them:

- **The engine runs in this process.** From 0.8 the default (V1) engine core lives in another
  process: ``LLM.apply_model`` then fails (0.8: ``AttributeError``, no ``model_executor``; 0.9+:
  ``TypeError``, a function cannot be serialised unless ``VLLM_ALLOW_INSECURE_SERIALIZATION=1``,
  which would let the engine unpickle whatever reaches its socket). We build the engine with
  ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` instead: the engine core is an in-process object, the
  edited tensors are handed to the model's own ``load_weights`` by reference (same GPU, no copy
  through a socket) and nothing is pickled. 0.6.x has only the in-process engine.
- **No prefix caching.** V1 turns it on by default; requests with ``prompt_logprobs`` skip cache
  reads but still write the cache, so a ``generate`` after a sync would reuse keys and values
  computed under the previous weights. 0.6.x does not support it with ``prompt_logprobs`` at all.
  The engine is built with ``enable_prefix_caching=False``, and every sync that sends tensors also
  calls ``reset_prefix_cache`` where the release has it.
- **``max_model_len`` from the run.** Left unset, vLLM sizes the engine for the model's full
  context (128K for Llama-3.1), which may not fit in a 0.4 share; the runner passes the longest
  prompt it will score plus the generation budget (:func:`engine_length`).
- **The HF backend's sampling.** Greedy when ``top_k <= 1``, else top-k sampling at temperature 1
  with top-p 1 and no repetition penalty, seeded per request with the task's seed; the model's
  end-of-sequence ids; answers stop at the same tokens as ``core/generate.py`` (end of sequence or
  a token whose text holds a newline, the stop token left out). Texts are decoded from token ids
  exactly as the HF backend decodes them.

Building the engine re-seeds Python's, NumPy's and torch's global generators (vLLM seeds its
workers in-process); the states are restored so that a method's randomness does not depend on the
backend. vLLM is an optional extra (``pip install "editbench[vllm]"``); nothing imports it unless
this backend is asked for.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .generate import ANSWER_RULES, AnswerRule, StopRule, eos_ids
from .probe import GenerationSettings
from .prompts import RAW, PromptFormat
from .records import PairScore, ScoringPair
from .tokenize import PairEncoder

log = logging.getLogger(__name__)

#: The vLLM releases this backend is made for: [lowest, first unsupported).
SUPPORTED_VERSIONS = ((0, 6, 3), (0, 34))
SUPPORTED_SPEC = "vllm>=0.6.3,<0.34"

#: vLLM >= 0.8 runs its engine core in a child process unless this is "0".
IN_PROCESS_VARIABLE = "VLLM_ENABLE_V1_MULTIPROCESSING"

#: New tokens an engine leaves room for beyond the longest text it holds: CounterFact's fluency
#: generation writes 50 by default, ROME's release up to 100 in all.
GENERATION_HEADROOM = 128

#: vLLM's default KV block size; :func:`engine_length` rounds up to whole blocks.
KV_BLOCK = 16


def parse_version(text: str) -> tuple[int, ...]:
    """The leading numbers of a version string: "0.11.1.dev3+gabc" -> (0, 11, 1)."""
    numbers = []
    for part in text.split("."):
        match = re.match(r"\d+", part)
        if match is None:
            break
        numbers.append(int(match.group()))
        if match.end() < len(part):
            break
    return tuple(numbers)


def version_problem(version: str) -> str | None:
    """Why the installed vLLM ``version`` cannot serve as a probe backend, or None if it can."""
    low, high = SUPPORTED_VERSIONS
    if low <= parse_version(version) < high:
        return None
    return (f"vLLM {version} is installed, but the vLLM probe backend supports {SUPPORTED_SPEC} "
            f"(pip install \"{SUPPORTED_SPEC}\"), or use --probe-backend hf")


def installed_vllm_version() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return None
    try:
        return importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:  # importable but not installed as a package
        import vllm

        return str(getattr(vllm, "__version__", "0"))


def vllm_unavailable_reason() -> str | None:
    """Why ``--probe-backend vllm`` cannot run here (one line naming the fix), or None."""
    version = installed_vllm_version()
    if version is None:
        return (f"--probe-backend vllm needs `pip install \"editbench[vllm]\"` ({SUPPORTED_SPEC}) "
                "and a CUDA GPU")
    problem = version_problem(version)
    if problem is not None:
        return problem
    if not torch.cuda.is_available():
        return "--probe-backend vllm needs a CUDA GPU; none is visible"
    return None


def vllm_available() -> bool:
    """A supported vLLM is installed and a CUDA GPU is visible (what ``--probe-backend auto``
    asks)."""
    return vllm_unavailable_reason() is None


def engine_length(tokenizer, texts: Iterable[str], new_tokens: int,
                  limit: int | None = None) -> int:
    """``max_model_len`` for an engine that must hold every one of ``texts`` and then generate
    ``new_tokens`` after it: the longest text's tokens (with the tokenizer's special tokens) plus
    ``new_tokens``, rounded up to whole KV blocks, and at most ``limit`` (the model's positions)."""
    longest = max((len(ids) for ids in _token_lengths(tokenizer, texts)), default=1)
    blocks = -(-(longest + new_tokens) // KV_BLOCK)
    length = blocks * KV_BLOCK
    return min(length, limit) if limit else length


def _token_lengths(tokenizer, texts: Iterable[str], chunk: int = 4096) -> Iterator[list[int]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == chunk:
            yield from tokenizer(batch)["input_ids"]
            batch = []
    if batch:
        yield from tokenizer(batch)["input_ids"]


@contextmanager
def _engine_in_this_process() -> Iterator[None]:
    """Build the engine with its core in this process (see the module docstring); the variable is
    put back afterwards, so nothing else in the process is changed."""
    before = os.environ.get(IN_PROCESS_VARIABLE)
    if before not in (None, "0"):
        log.info("vLLM probe: %s=%s is overridden for the engine; its weight sync needs the "
                 "engine in this process", IN_PROCESS_VARIABLE, before)
    os.environ[IN_PROCESS_VARIABLE] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(IN_PROCESS_VARIABLE, None)
        else:
            os.environ[IN_PROCESS_VARIABLE] = before


@contextmanager
def _global_generators_kept() -> Iterator[None]:
    """Undo the global re-seeding that building a vLLM engine does in this process."""
    import numpy as np

    python, numpy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = (torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized() else None)
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def model_access(llm) -> Callable[[Callable[[nn.Module], object]], list]:
    """How to run a function on the engine's live model: ``LLM.apply_model`` where the release has
    it (0.8 and later; in-process it is a plain call), the driver worker's model on 0.6 / 0.7."""
    engine = llm.llm_engine
    if not hasattr(engine, "model_executor"):
        raise RuntimeError(f"the vLLM engine runs in another process ({IN_PROCESS_VARIABLE} was "
                           "not honoured, or vLLM's settings were read before this engine was "
                           "built); the probe backend cannot reach its weights. Start a fresh "
                           "process, or use --probe-backend hf")
    if hasattr(llm, "apply_model"):
        return llm.apply_model
    executor = engine.model_executor

    def on_driver(func: Callable[[nn.Module], object]) -> list:
        return [func(executor.driver_worker.model_runner.model)]

    return on_driver


class VLLMProbe:
    """Scores (prompt, target) pairs with a vLLM engine that mirrors the edited model's weights."""

    def __init__(self, model_source: str, tokenizer, dtype: torch.dtype,
                 gpu_memory_utilization: float = 0.4, trust_remote_code: bool = False,
                 max_model_len: int | None = None, prompt_format: PromptFormat = RAW) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise RuntimeError("--probe-backend vllm needs `pip install \"editbench[vllm]\"` "
                               f"({SUPPORTED_SPEC})")
        import vllm

        self.version = str(getattr(vllm, "__version__", "0"))
        problem = version_problem(self.version)
        if problem is not None:
            raise RuntimeError(problem)
        with _engine_in_this_process(), _global_generators_kept():
            self.llm = vllm.LLM(model=str(model_source), dtype=str(dtype).removeprefix("torch."),
                                gpu_memory_utilization=gpu_memory_utilization,
                                trust_remote_code=trust_remote_code,
                                enable_prefix_caching=False, max_model_len=max_model_len, seed=0)
        self._on_model = model_access(self.llm)
        self.max_model_len = max_model_len
        self.encoder = PairEncoder(tokenizer, prompt_format)
        self._dirty: set[str] = set()  # tensors that differ from the base checkpoint in the engine
        self._eos: frozenset[int] = (frozenset() if tokenizer.eos_token_id is None
                                     else frozenset({tokenizer.eos_token_id}))
        #: what ends a generated answer under each answer rule, found on first use
        self._stops: dict[str, StopRule] = {}
        self.forward_seconds = 0.0
        log.info("vLLM %s probe backend: engine in this process, prefix caching off, "
                 "max_model_len %s", self.version, max_model_len)

    def sync(self, model: nn.Module, names: Sequence[str]) -> None:
        """Send ``names`` (and whatever an earlier sync changed, so it is restored) from ``model``
        to the engine, then drop any cached keys and values computed under the old weights."""
        eos = eos_ids(model, self.encoder.tokenizer)
        if eos != self._eos:
            self._eos, self._stops = eos, {}
        wanted = sorted(self._dirty | set(names))
        if wanted:
            weights = [(name, model.get_parameter(name).detach()) for name in wanted]

            def load(engine_model: nn.Module):
                return engine_model.load_weights(weights=iter(weights))

            for loaded in self._on_model(load):
                if isinstance(loaded, set) and not loaded:  # 0.8+ report what they loaded
                    raise RuntimeError("the vLLM engine's model took none of the tensors "
                                       f"{wanted[:3]}...; its parameter names do not follow the "
                                       "Hugging Face checkpoint's")
            reset = getattr(self.llm, "reset_prefix_cache", None)  # 0.8+; 0.6.x keeps no cache here
            if reset is not None:
                reset()
        self._dirty = set(names)

    def _check_length(self, prompt: str, n_tokens: int) -> None:
        if self.max_model_len is not None and n_tokens > self.max_model_len:
            raise ValueError(f"prompt {prompt!r} needs {n_tokens} tokens, more than the vLLM "
                             f"engine's max_model_len {self.max_model_len} (set from the run's "
                             "longest prompt); use --probe-backend hf")

    def score(self, pairs: Sequence[ScoringPair]) -> list[PairScore]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        encoded = self.encoder.encode_many([(p.prompt, p.target) for p in pairs])
        for pair, enc in zip(pairs, encoded, strict=True):
            self._check_length(pair.prompt, len(enc.ids) + 1)
        params = SamplingParams(max_tokens=1, prompt_logprobs=1, temperature=0.0)
        started = time.perf_counter()
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(e.ids)) for e in encoded],
                                    params, use_tqdm=False)
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
        """Prompt plus continuation, sampled as :meth:`HFProbe.generate` samples (see the module
        docstring); the text is made from the prompt and the new tokens as there
        (``PairEncoder.generated_text``)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        sample = settings.top_k > 1
        choice = {"temperature": 1.0, "top_k": settings.top_k} if sample else {"temperature": 0.0}
        params = SamplingParams(max_tokens=settings.max_new_tokens, top_p=1.0,
                                repetition_penalty=1.0, seed=settings.seed,
                                stop_token_ids=sorted(self._eos), **choice)
        encoded = [self.encoder.encode_prompt(p) for p in prompts]
        for prompt, ids in zip(prompts, encoded, strict=True):
            self._check_length(prompt, len(ids) + settings.max_new_tokens)
        started = time.perf_counter()
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(ids)) for ids in encoded],
                                    params, use_tqdm=False)
        self.forward_seconds += time.perf_counter() - started
        return [self.encoder.generated_text(prompt, ids, out.outputs[0].token_ids)
                for prompt, ids, out in zip(prompts, encoded, outputs, strict=True)]

    def generate_answers(self, pairs: Sequence[ScoringPair], max_new_tokens: int,
                         rule: AnswerRule = ANSWER_RULES["editbench"]) -> list[str]:
        """Greedy decoding with the HF backend's stop rule (``StopRule``: the model's
        end-of-sequence ids, every token whose text holds a newline and, under a rule with stop
        texts, every token that starts with one, the stop token left out), each request with the
        rule's budget; the answer is decoded from its token ids and cut as the HF backend does."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        stop = self._stops.get(rule.name)
        if stop is None:
            stop = self._stops[rule.name] = StopRule.with_eos(self._eos, self.encoder.tokenizer,
                                                              rule)
        stop_ids = sorted(stop.ids)
        encoded = self.encoder.encode_many([(p.prompt, p.target) for p in pairs])
        budgets = [rule.budget(e.n_target, max_new_tokens) for e in encoded]
        for pair, enc, budget in zip(pairs, encoded, budgets, strict=True):
            self._check_length(pair.prompt, enc.n_prompt + budget)
        params = [SamplingParams(temperature=0.0, max_tokens=budget, stop_token_ids=stop_ids)
                  for budget in budgets]
        prompts = [TokensPrompt(prompt_token_ids=list(e.ids[: e.n_prompt])) for e in encoded]
        started = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        self.forward_seconds += time.perf_counter() - started
        answers = []
        for out in outputs:
            ids = list(out.outputs[0].token_ids)
            if ids and ids[-1] in stop.ids:
                ids.pop()
            answers.append(ids)
        return [rule.cut(text) for text in
                self.encoder.tokenizer.batch_decode(answers, skip_special_tokens=True)]
