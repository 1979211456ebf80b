"""The probe interface: score many (prompt, target) pairs at once.

Like lm-evaluation-harness's ``loglikelihood``, everything the runner measures is built on one
batched call. A backend returns, per pair, teacher-forced top-1 token accuracy of the target, its
summed log-probability and the argmax tokens. The Hugging Face backend lives here; other backends
(vLLM) implement the same protocol.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from .generate import ANSWER_RULES, AnswerRule, StopRule, greedy_decode
from .progress import progress
from .prompts import RAW, PromptFormat
from .records import PairScore, ScoringPair
from .tokenize import PairEncoder, pad, token_budget_batches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    """Recorded with every generated metric, so a fluency number says how its text was made."""

    max_new_tokens: int = 50
    top_k: int = 5  # ROME samples from the top 5 tokens; 1 means greedy
    seed: int = 0


class ProbeBackend(Protocol):
    """What the runner, the tasks and the capability sets ask of a scoring backend."""

    #: seconds spent in the model's forward passes so far (and reading their results back), so the
    #: runner can tell the model's share of an evaluation from the harness's own overhead
    forward_seconds: float

    def score(self, pairs: Sequence[ScoringPair]) -> list[PairScore]:
        """Teacher-forced scores of every pair, in order."""
        ...

    def generate(self, prompts: Sequence[str], settings: GenerationSettings) -> list[str]:
        """Prompt plus continuation, for each prompt."""
        ...

    def sync(self, model: nn.Module, names: Sequence[str]) -> None:
        """Make the backend see ``model``'s current values of the tensors ``names`` (and undo what
        an earlier sync changed that ``names`` no longer covers). A backend that reads the live
        model has nothing to do."""
        ...

    def generate_answers(self, pairs: Sequence[ScoringPair], max_new_tokens: int,
                         rule: AnswerRule = ANSWER_RULES["editbench"]) -> list[str]:
        """Greedy decoding from each pair's prompt until an end-of-sequence token, a newline, a
        stop text of ``rule`` or its budget of new tokens (``core/generate.py``); the text of the
        continuation, without its stop token or text."""
        ...


def head_only_logits(model: nn.Module, batch) -> torch.Tensor | None:
    """Logits at the target positions alone: the base model's hidden states, with the output head
    applied only where a target token is predicted. On a 50k-256k vocabulary the head is a large
    share of the forward pass, and full logits are batch x length x vocab (gigabytes at 8k tokens).
    ``None`` when the model has no separate base and head."""
    base = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if base is None or base is model or head is None:
        return None
    hidden = base(input_ids=batch.input_ids, attention_mask=batch.attention_mask)[0]
    logits = head(hidden[batch.target_mask])
    softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    if softcap:  # Gemma 2 and 3 squash their logits after the head
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def full_logits(model: nn.Module, batch) -> torch.Tensor:
    """Logits at the target positions, cut from the model's own full forward pass."""
    return model(input_ids=batch.input_ids,
                 attention_mask=batch.attention_mask).logits[batch.target_mask]


def agree(fast: torch.Tensor, full: torch.Tensor) -> bool:
    tolerance = 1e-4 if full.dtype == torch.float32 else 3e-2
    return fast.shape == full.shape and torch.allclose(fast.float(), full.float(),
                                                       rtol=tolerance, atol=tolerance)


#: Rows of the first batch on which the head-only path is checked against the full logits.
CHECK_ROWS = 8

#: Architectures whose learned position embeddings cannot go past the configured length.
ABSOLUTE_POSITIONS = {"gpt2", "opt", "bloom"}


class HFProbe:
    """Scores pairs with a (possibly edited, live) Hugging Face model, sorted by length and
    padded."""

    def __init__(self, model: nn.Module, tokenizer, device: torch.device,
                 max_tokens: int = 8192, prompt_format: PromptFormat = RAW) -> None:
        self.model = model
        self.encoder = PairEncoder(tokenizer, prompt_format)
        self.device = device
        self.max_tokens = max_tokens
        #: time spent in the model's forward passes (and reading their results back), for overhead
        #: accounting
        self.forward_seconds = 0.0
        #: whether ``head_only_logits`` reproduces the model's own logits; checked on the first
        #: batch, so a model that changes its logits after the head in a way we do not know
        #: falls back
        self.head_only: bool | None = None
        #: prompts already reported as longer than the model's positions
        self.warned_long: set[str] = set()
        #: what ends a generated answer under each answer rule, found on first use
        self._stops: dict[str, StopRule] = {}

    def sync(self, model: nn.Module, names: Sequence[str]) -> None:
        """Nothing to do: this backend scores the live model itself."""
        if model is not self.model:
            raise ValueError("an HFProbe scores the model it was made with; make a new probe for "
                             "another model")

    def target_logits(self, batch) -> torch.Tensor:
        if self.head_only is False:
            return full_logits(self.model, batch)
        if self.head_only is None:
            sample = batch.rows(0, CHECK_ROWS)
            fast = head_only_logits(self.model, sample)
            self.head_only = fast is not None and agree(fast, full_logits(self.model, sample))
            if not self.head_only:
                log.info("scoring with full logits: the output head alone does not reproduce this "
                         "model's logits")
                return full_logits(self.model, batch)
        return head_only_logits(self.model, batch)

    @torch.inference_mode()
    def score(self, pairs: Sequence[ScoringPair]) -> list[PairScore]:
        encoded = self.encoder.encode_many([(p.prompt, p.target) for p in pairs])
        config = getattr(self.model, "config", None)
        limit = (getattr(config, "max_position_embeddings", None)
                 or getattr(config, "n_positions", None))
        too_long = [i for i, e in enumerate(encoded) if limit and len(e.ids) > limit]
        if too_long:
            first = too_long[0]
            what = (f"prompt {pairs[first].prompt!r} with its target is "
                    f"{len(encoded[first].ids)} tokens, longer than "
                    f"the model's {limit} positions (max_position_embeddings)")
            if getattr(config, "model_type", "") in ABSOLUTE_POSITIONS:
                raise ValueError(what)
            # once per prompt, not at every checkpoint
            if pairs[first].prompt not in self.warned_long:
                self.warned_long.add(pairs[first].prompt)
                log.warning("%s%s; it is scored, but past the length it was trained on the "
                            "model's scores mean little: shorten the prompt or use a model with "
                            "more positions", what,
                            f" (and {len(too_long) - 1} more pairs)" if len(too_long) > 1 else "")
        results: list[PairScore | None] = [None] * len(pairs)
        was_training = self.model.training
        self.model.eval()
        batches = list(token_budget_batches([len(e.ids) for e in encoded], self.max_tokens))
        for indices in progress(batches, desc="scoring", unit="batch", disable=len(batches) < 4):
            batch = self.encoder.collate([encoded[i] for i in indices]).to(self.device)
            started = time.perf_counter()
            picked = self.target_logits(batch).float()
            labels = batch.labels[batch.target_mask]
            label_lp = torch.log_softmax(picked, dim=-1).gather(1, labels.unsqueeze(1)).squeeze(1)
            argmax = picked.argmax(dim=-1)
            correct = argmax == labels
            counts = batch.target_mask.sum(1).tolist()
            # syncs the device
            label_lp, argmax, correct = label_lp.tolist(), argmax.tolist(), correct.tolist()
            self.forward_seconds += time.perf_counter() - started
            offset = 0
            for index, n in zip(indices, counts):
                span = slice(offset, offset + n)
                offset += n
                results[index] = PairScore(
                    token_accuracy=sum(correct[span]) / n if n else 0.0,
                    logprob=sum(label_lp[span]),
                    n_tokens=n,
                    predictions=tuple(argmax[span]),
                )
        self.model.train(was_training)
        return results  # type: ignore[return-value]

    def _generation_config(self, settings: GenerationSettings):
        """Exactly the task's sampling settings, and the model's stop tokens. A checkpoint's own
        ``generation_config.json`` (Llama-3's temperature 0.6 and top-p 0.9, say) would otherwise
        fill in whatever the settings leave unset, and two models would be sampled differently."""
        from transformers import GenerationConfig

        sample = settings.top_k > 1
        own = getattr(self.model, "generation_config", None)
        eos = getattr(own, "eos_token_id", None)
        if eos is None:
            eos = getattr(getattr(self.model, "config", None), "eos_token_id", None)
        return GenerationConfig(max_new_tokens=settings.max_new_tokens, do_sample=sample,
                                num_beams=1, top_k=settings.top_k if sample else None,
                                top_p=1.0 if sample else None,
                                temperature=1.0 if sample else None, repetition_penalty=1.0,
                                pad_token_id=self.encoder.pad_id, eos_token_id=eos)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], settings: GenerationSettings,
                 batch_size: int = 32) -> list[str]:
        """Left-padded batched generation, seeded without disturbing the global RNG that methods
        use."""
        rng_state = torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None
        torch.manual_seed(settings.seed)
        texts: list[str] = []
        own = self.model.generation_config
        # nothing of the checkpoint's is merged in
        self.model.generation_config = self._generation_config(settings)
        try:
            for start in range(0, len(prompts), batch_size):
                chunk = prompts[start : start + batch_size]
                encoded = [self.encoder.encode_prompt(p) for p in chunk]
                ids, mask = pad(encoded, self.encoder.pad_id, left=True)
                width = ids.shape[1]
                out = self.model.generate(input_ids=ids.to(self.device),
                                          attention_mask=mask.to(self.device),
                                          generation_config=self.model.generation_config)
                texts.extend(self.encoder.generated_text(prompt, seq, row[width:].tolist())
                             for prompt, row, seq in zip(chunk, out.cpu(), encoded))
        finally:
            self.model.generation_config = own
            torch.set_rng_state(rng_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state_all(cuda_state)
        return texts

    def generate_answers(self, pairs: Sequence[ScoringPair], max_new_tokens: int,
                         rule: AnswerRule = ANSWER_RULES["editbench"]) -> list[str]:
        """Batched greedy decoding with a KV cache (``core/generate.py``)."""
        stop = self._stops.get(rule.name)
        if stop is None:
            stop = self._stops[rule.name] = StopRule.for_model(self.model, self.encoder.tokenizer,
                                                               rule)
        budgets = [rule.budget(e.n_target, max_new_tokens)
                   for e in self.encoder.encode_many([(p.prompt, p.target) for p in pairs])]
        started = time.perf_counter()
        ids = greedy_decode(self.model, self.encoder, [p.prompt for p in pairs], budgets,
                            stop, self.device, self.max_tokens)
        self.forward_seconds += time.perf_counter() - started
        return [rule.cut(text) for text in
                self.encoder.tokenizer.batch_decode(ids, skip_special_tokens=True)]


class RewrittenPrompts:
    """A probe that scores what a prompt-rewriting method (retrieval) shows the model: each prompt
    goes through ``rewrite`` first; generated texts keep the caller's prompt in front."""

    def __init__(self, inner: ProbeBackend, rewrite) -> None:
        self.inner = inner
        self.rewrite = rewrite

    @property
    def forward_seconds(self) -> float:
        return self.inner.forward_seconds

    def score(self, pairs: Sequence[ScoringPair]) -> list[PairScore]:
        return self.inner.score([ScoringPair(self.rewrite(p.prompt), p.target) for p in pairs])

    def generate(self, prompts: Sequence[str], settings: GenerationSettings) -> list[str]:
        shown = [self.rewrite(p) for p in prompts]
        texts = self.inner.generate(shown, settings)
        return [prompt + text[len(seen):] if text.startswith(seen) else text
                for prompt, seen, text in zip(prompts, shown, texts)]

    def sync(self, model: nn.Module, names: Sequence[str]) -> None:
        self.inner.sync(model, names)

    def generate_answers(self, pairs: Sequence[ScoringPair], max_new_tokens: int,
                         rule: AnswerRule = ANSWER_RULES["editbench"]) -> list[str]:
        return self.inner.generate_answers(
            [ScoringPair(self.rewrite(p.prompt), p.target) for p in pairs], max_new_tokens, rule)
