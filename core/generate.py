"""Greedy decoding of many prompts at once with a KV cache: the decoder of the generated metrics.

Teacher-forced scores feed the target's tokens in and flatter editors ("The Mirage of Model
Editing", ACL 2025); the generated metrics make the edited model produce the answer itself. That
means one decoding per scored prompt at every checkpoint, so it must be batched: prompts are
grouped into token-budget batches of similar length, padded on the left (new tokens then follow
every prompt), encoded once, and extended one token per step from the cache. A row stops at an
end-of-sequence token, at a token whose text holds a newline, or at its own length budget, and is
then dropped from the batch (its cache rows too), so long answers do not keep short ones computing.
The result equals ``model.generate(do_sample=False)`` run one prompt at a time with the same stop
tokens (``tests/test_generate.py``).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .tokenize import PairEncoder, pad, token_budget_batches


@dataclass(frozen=True)
class AnswerRule:
    """How a generated answer is decoded: its budget of new tokens and the texts that end it.

    ``editbench``: the target's tokens and three more (:func:`answer_budget`), ending at a newline
    or end of sequence. ``wild`` (LocFT-BF's evaluation, ``eval_edit_metric.py:77-81``, and
    QAEdit's "in the wild" setting): up to ``cap`` new tokens whatever the target's length, ending
    at ".", a newline or end of sequence, the stop text left out (vLLM's ``stop`` strings)."""

    name: str
    stop_texts: tuple[str, ...] = ()
    #: whether the budget follows the target's length (else every answer may take ``cap`` tokens)
    target_sized: bool = True

    def budget(self, target_tokens: int, cap: int) -> int:
        return answer_budget(target_tokens, cap) if self.target_sized else max(1, cap)

    def cut(self, text: str) -> str:
        """The answer up to the first stop text, which is left out."""
        for stop in self.stop_texts:
            text = text.split(stop, 1)[0]
        return text


ANSWER_RULES = {"editbench": AnswerRule("editbench"),
                "wild": AnswerRule("wild", stop_texts=(".",), target_sized=False)}


def answer_budget(target_tokens: int, cap: int) -> int:
    """New tokens a generated answer may take: the target's tokens and three more (a closing full
    stop, one token of slack for another segmentation of the same text, and one that shows the
    answer goes on), at most ``cap``. An exact match needs no more: a longer answer is not one."""
    return max(1, min(cap, target_tokens + 3))


def eos_ids(model: nn.Module, tokenizer) -> frozenset[int]:
    """The model's end-of-sequence ids: its generation config's, else its config's, else the
    tokenizer's (what ``model.generate`` stops at)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(getattr(model, "config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return frozenset({eos} if isinstance(eos, int) else set(eos or ()))


@dataclass(frozen=True)
class StopRule:
    """Token ids that end an answer: the model's end-of-sequence tokens and every token whose text
    holds a newline (answers are one line). The stop token itself is not part of the answer."""

    ids: frozenset[int]

    @classmethod
    def for_model(cls, model: nn.Module, tokenizer, answer: AnswerRule | None = None
                  ) -> StopRule:
        return cls.with_eos(eos_ids(model, tokenizer), tokenizer, answer)

    @classmethod
    def with_eos(cls, eos: Iterable[int], tokenizer, answer: AnswerRule | None = None
                 ) -> StopRule:
        """The rule for a model whose end-of-sequence ids are ``eos`` (a backend that holds no
        model, such as the vLLM engine, keeps the ids instead of the model). Under an answer rule
        with stop texts, a token whose text starts with one ends the answer too (the text before
        it is whole; a stop text inside a token is cut by :meth:`AnswerRule.cut`)."""
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        stops = answer.stop_texts if answer is not None else ()
        ending = {i for i, text in enumerate(texts)
                  if "\n" in text or (stops and text.startswith(stops))}
        return cls(frozenset(set(eos) | ending))

    def mask(self, vocab_size: int, device: torch.device) -> torch.Tensor:
        stop = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        stop[[i for i in self.ids if i < vocab_size]] = True
        return stop


def _cache_argument(model: nn.Module) -> str:
    """transformers 5 calls the KV cache ``cache``; earlier releases ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _last_logits_only(model: nn.Module) -> dict[str, int]:
    """Ask for the last position's logits alone where the model can (a vocabulary of 128k makes full
    logits of a prompt batch gigabytes); transformers renamed the argument once."""
    parameters = inspect.signature(model.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in parameters:
            return {name: 1}
    return {}


def _cache_of(result):
    found = getattr(result, "cache", None)
    return found if found is not None else result.past_key_values


def _select_rows(cache, keep: torch.Tensor):
    """The cache of the rows ``keep`` (a boolean mask), or None when this cache cannot drop rows."""
    select = getattr(cache, "batch_select_indices", None)
    if select is None:
        return None
    select(keep.nonzero().squeeze(1))
    return cache


@torch.inference_mode()
def greedy_decode(model: nn.Module, encoder: PairEncoder, prompts: Sequence[str],
                  budgets: Sequence[int], stop: StopRule, device: torch.device,
                  max_tokens: int = 8192) -> list[list[int]]:
    """The token ids greedy decoding appends to each prompt, up to its stop token (excluded) or its
    budget of new tokens. ``max_tokens`` bounds a batch's padded prompt-plus-answer size."""
    if len(budgets) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(budgets)} length budgets")
    encoded = [encoder.encode_prompt(p) for p in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    lengths = [len(ids) + max(budget, 0) for ids, budget in zip(encoded, budgets)]
    was_training = model.training
    model.eval()
    try:
        for rows in token_budget_batches(lengths, max_tokens):
            rows = [r for r in rows if budgets[r] > 0]
            if rows:
                _decode_batch(model, [encoded[r] for r in rows], [budgets[r] for r in rows],
                              stop, encoder.pad_id, device, [out[r] for r in rows])
    finally:
        model.train(was_training)
    return out


def _decode_batch(model: nn.Module, prompts: list[list[int]], budgets: list[int], stop: StopRule,
                  pad_id: int, device: torch.device, answers: list[list[int]]) -> None:
    ids, mask = pad(prompts, pad_id, left=True)
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(1) - 1).clamp_min(0)
    cache_argument = _cache_argument(model)
    result = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                   **_last_logits_only(model))
    cache, logits = _cache_of(result), result.logits[:, -1]
    stop_mask = stop.mask(logits.shape[-1], device)
    active = torch.arange(len(prompts), device=device)  # batch row -> index into answers
    budget = torch.tensor(budgets, device=device)
    made = torch.zeros(len(prompts), dtype=torch.long, device=device)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    next_position = positions[:, -1] + 1
    while True:
        token = logits.float().argmax(-1)
        halted = stop_mask[token] | done
        for row, tok, halt in zip(active.tolist(), token.tolist(), halted.tolist()):
            if not halt:
                answers[row].append(tok)
        made += (~halted).long()
        done = halted | (made >= budget)
        if done.all():
            return
        if done.any():
            smaller = _select_rows(cache, ~done)
            if smaller is not None:  # drop the finished rows everywhere; else they run on, ignored
                keep = ~done
                cache, active, token, mask = smaller, active[keep], token[keep], mask[keep]
                budget, made, next_position, done = (budget[keep], made[keep], next_position[keep],
                                                     done[keep])
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        result = model(input_ids=token.unsqueeze(1), attention_mask=mask,
                       position_ids=next_position.unsqueeze(1), use_cache=True,
                       **{cache_argument: cache})
        cache, logits = _cache_of(result), result.logits[:, -1]
        next_position = next_position + 1
