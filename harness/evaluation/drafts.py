"""Greedy answers decoded on from the teacher-forced pass over the same prompts (issue 34).

A checkpoint reads each scored prompt twice: teacher-forced, with its target after it, and by
greedy decoding, whose first forward pass reads the prompt again. For a model whose forward pass is
its architecture's own (weights edited, or the prompt rewritten: every method a vLLM engine can
score), the teacher-forced pass already holds what decoding computes first: the logits at the
prompt's last position and, as long as the model predicts the target token by token, at each
following one, and the keys and values of every one of those tokens. So the target serves as a
draft, as in speculative decoding (Leviathan et al., ICML 2023), checked by a pass that was made
anyway (:func:`decided`): decoding takes the predictions while they equal the target, and where
they part (or after the target's last token, whose logits the pass also reads) it goes on from the
pass's own cache, its rows past the decided tokens masked out, one token at a time as
``core/generate.py`` does. No prompt is read twice.

Each token is the argmax of the logits decoding would compute, computed in another batch shape:
the answers are greedy decoding's up to the float rounding of the batched kernels (a near tie may
break the other way), as any change of batch is. A model whose layers attend within a window
(Mistral's and Gemma's sliding windows) is drafted only where no sequence reaches it. A method
whose hook changes the forward computation is drafted only where each position's output still
depends on that position's own input alone (GRACE's codebook test, ``position_wise``); WISE and
MEMOIR choose a memory from the whole input, which teacher-forced includes the target, and are
never drafted (:func:`draftable`, which the runner asks). The answers are kept for one model
state, one checkpoint's scoring (:func:`drafting`), and only for the prompts generation will ask
for; any other is decoded as before.

The decoding loop is ``core/generate.py``'s, started from a cache instead of a prompt; it is kept
apart because that module is part of the code that built the shipped pocket world
(``core/identity.py``), which a change would send to be rebuilt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ...core.generate import ANSWER_RULES, AnswerRule, StopRule, _cache_argument
from ...core.probe import HFProbe
from ...core.records import ScoringPair

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Draft:
    """What the teacher-forced pass predicted after a prompt: at each target position (given the
    target tokens before it) and after the target's last token."""

    target: tuple[int, ...]
    predicted: tuple[int, ...]
    after: int


def decided(draft: Draft, budget: int, stops: frozenset[int]) -> tuple[list[int], bool]:
    """The tokens greedy decoding appends that the draft decides, and whether decoding ends with
    them (a stop token next, or the budget spent): the predictions while they equal the target
    (each was computed after the target tokens before it, which decoding has appended too), then
    the first that does not, or the one after the whole target."""
    tokens: list[int] = []
    for position, predicted in enumerate((*draft.predicted, draft.after)):
        if predicted in stops:
            return tokens, True
        tokens.append(predicted)
        if len(tokens) >= budget:
            return tokens, True
        if position == len(draft.target) or predicted != draft.target[position]:
            return tokens, False  # what follows was computed after other tokens
    raise AssertionError("unreachable: the loop ends at the token after the target")


class DraftingProbe(HFProbe):
    """The HF probe; while :meth:`expect` has named the answers to come, each teacher-forced batch
    decodes those of its prompts from its own pass, and :meth:`generate_answers` reads them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._budgets: dict[tuple[int, ...], int] | None = None  # prompt ids -> tokens to decode
        self._answers: dict[tuple[int, ...], list[int]] = {}
        self._stop: StopRule | None = None
        self._warned = False

    def _stop_rule(self, rule: AnswerRule) -> StopRule:
        stop = self._stops.get(rule.name)
        if stop is None:
            stop = self._stops[rule.name] = StopRule.for_model(self.model, self.encoder.tokenizer,
                                                               rule)
        return stop

    def _budgets_of(self, pairs: Sequence[ScoringPair], max_new_tokens: int,
                    rule: AnswerRule) -> list[int]:
        return [rule.budget(e.n_target, max_new_tokens)
                for e in self.encoder.encode_many([(p.prompt, p.target) for p in pairs])]

    def expect(self, pairs: Sequence[ScoringPair], max_new_tokens: int,
               rule: AnswerRule) -> None:
        """The answers generation will ask for before the model changes again: each prompt is
        decoded to the largest of its budgets (greedy answers to a smaller one are its start)."""
        self._stop = self._stop_rule(rule)
        self._answers = {}
        self._budgets = {}
        for pair, budget in zip(pairs, self._budgets_of(pairs, max_new_tokens, rule)):
            key = tuple(self.encoder.encode_prompt(pair.prompt))
            self._budgets[key] = max(budget, self._budgets.get(key, 0))

    def forget(self) -> None:
        self._budgets, self._answers, self._stop = None, {}, None

    def target_logits(self, batch) -> torch.Tensor:
        if not self._budgets:
            return super().target_logits(batch)
        captured: list = []
        base = getattr(self.model, "base_model", None)
        head = (self.model.get_output_embeddings()
                if hasattr(self.model, "get_output_embeddings") else None)
        if base is None or base is self.model or head is None:
            return super().target_logits(batch)
        handle = base.register_forward_hook(lambda _m, _a, output: captured.append(output))
        try:
            picked = super().target_logits(batch)
        finally:
            handle.remove()
        output = captured[-1] if captured else None
        cache = _cache_of(output) if output is not None else None
        # the head alone gives this model's logits (checked on the first batch), the last pass was
        # this batch's, and no attention window is reached (a windowed layer's cache keeps only
        # its last positions, which the masks here do not follow)
        longest = batch.input_ids.shape[1] + max(self._budgets.values())
        if (self.head_only and cache is not None and output[0].shape[:2] == batch.input_ids.shape
                and longest < _attention_window(self.model)):
            before = set(self._answers)
            try:
                self._decode(batch, picked, output[0], cache, head)
            except Exception as exc:  # a model or cache this was not made for: decode as before
                for prompt in set(self._answers) - before:
                    del self._answers[prompt]
                if not self._warned:
                    self._warned = True
                    log.warning("greedy answers are decoded from their prompts: decoding on from "
                                "the teacher-forced pass failed (%s: %s)", type(exc).__name__, exc)
        return picked

    def _decode(self, batch, picked: torch.Tensor, hidden: torch.Tensor, cache, head) -> None:
        """The expected answers of this batch's prompts, from its pass and its cache."""
        predicted = picked.float().argmax(-1).tolist()
        labels = batch.labels[batch.target_mask].tolist()
        counts = batch.target_mask.sum(1).tolist()
        lengths = batch.attention_mask.sum(1)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        after = head(hidden[rows, lengths - 1]).float().argmax(-1).tolist()
        ends = (batch.prompt_last + 1).tolist()
        go_on: list[tuple[int, tuple[int, ...], list[int]]] = []  # (row, prompt, decided)
        offset = 0
        for row, (n, length, end) in enumerate(zip(counts, lengths.tolist(), ends)):
            span = slice(offset, offset + n)
            offset += n
            prompt = tuple(batch.input_ids[row, :end].tolist())
            budget = self._budgets.get(prompt)
            if budget is None or prompt in self._answers or not n or end + n != length:
                continue  # not asked for, decided already, or not a whole right-padded row
            draft = Draft(tuple(labels[span]), tuple(predicted[span]), after[row])
            tokens, ended = decided(draft, budget, self._stop.ids)
            self._answers[prompt] = tokens
            if not ended:
                go_on.append((row, prompt, tokens))
        if go_on:
            started = time.perf_counter()
            self._continue(batch, cache, go_on)
            self.forward_seconds += time.perf_counter() - started

    def _continue(self, batch, cache, go_on) -> None:
        """Greedy decoding of the rows ``go_on`` from the pass's cache: each row's keys and values
        up to its decided tokens stay visible, those of the target tokens it did not take and of
        the padding are masked, and the last decided token is the first one fed."""
        device = batch.input_ids.device
        keep = torch.tensor([row for row, _, _ in go_on], device=device)
        if getattr(cache, "batch_select_indices", None) is None:
            return
        cache.batch_select_indices(keep)
        width = batch.input_ids.shape[1]
        visible = torch.tensor([len(prompt) + len(tokens) - 1 for _, prompt, tokens in go_on],
                               device=device)
        mask = (torch.arange(width, device=device).unsqueeze(0) < visible.unsqueeze(1)).long()
        answers = [self._answers[prompt] for _, prompt, _ in go_on]
        budget = torch.tensor([self._budgets[prompt] for _, prompt, _ in go_on], device=device)
        made = torch.tensor([len(tokens) for _, _, tokens in go_on], device=device)
        token = torch.tensor([tokens[-1] for _, _, tokens in go_on], device=device)
        position = visible
        stop = self._stop.mask(self.model.get_output_embeddings().weight.shape[0], device)
        active = list(range(len(go_on)))
        argument = _cache_argument(self.model)
        while True:
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            result = self.model(input_ids=token.unsqueeze(1), attention_mask=mask,
                                position_ids=position.unsqueeze(1), use_cache=True,
                                **{argument: cache})
            cache, logits = _cache_of(result), result.logits[:, -1]
            token = logits.float().argmax(-1)
            halted = stop[token]
            for row, tok, halt in zip(active, token.tolist(), halted.tolist()):
                if not halt:
                    answers[row].append(tok)
            made = made + (~halted).long()
            done = halted | (made >= budget)
            if done.all():
                return
            if done.any():
                left = ~done
                cache.batch_select_indices(left.nonzero().squeeze(1))
                active = [row for row, gone in zip(active, done.tolist()) if not gone]
                token, mask, budget, made, position = (token[left], mask[left], budget[left],
                                                       made[left], position[left])
            position = position + 1

    def generate_answers(self, pairs: Sequence[ScoringPair], max_new_tokens: int,
                         rule: AnswerRule = ANSWER_RULES["editbench"]) -> list[str]:
        if not self._answers or self._stop != self._stop_rule(rule):
            return super().generate_answers(pairs, max_new_tokens, rule)
        budgets = self._budgets_of(pairs, max_new_tokens, rule)
        found = [self._answers.get(tuple(self.encoder.encode_prompt(p.prompt))) for p in pairs]
        missing = [i for i, ids in enumerate(found) if ids is None]
        texts: list[str | None] = [None] * len(pairs)
        if missing:
            for i, text in zip(missing, super().generate_answers([pairs[i] for i in missing],
                                                                 max_new_tokens, rule)):
                texts[i] = text
        decoded = [i for i, ids in enumerate(found) if ids is not None]
        # greedy answers to a budget are the start of those to a larger one
        made = self.encoder.tokenizer.batch_decode([found[i][:budgets[i]] for i in decoded],
                                                   skip_special_tokens=True)
        for i, text in zip(decoded, made):
            texts[i] = rule.cut(text)
        return texts  # type: ignore[return-value]


#: config fields that bound how far back a layer attends (Mistral, Gemma 2 and 3, Qwen 2's
#: sliding window; GPT-Neo's local attention; Llama 4's chunks)
WINDOW_FIELDS = ("sliding_window", "window_size", "attention_chunk_size")


def _attention_window(model) -> float:
    config = getattr(model, "config", None)
    found = [getattr(config, name, None) for name in WINDOW_FIELDS]
    return min((w for w in found if isinstance(w, int) and w > 0), default=float("inf"))


def _cache_of(output):
    """The KV cache a forward pass returned, under either name; None when it returned none (unlike
    ``core/generate.py``'s, which always asks for one)."""
    found = getattr(output, "cache", None)
    return found if found is not None else getattr(output, "past_key_values", None)


def asked_pairs(probe, pairs: Sequence[ScoringPair]) -> list[ScoringPair]:
    """``pairs`` as the drafting probe will be asked for them (through a prompt rewrite)."""
    rewrite = getattr(probe, "rewrite", None)
    return [ScoringPair(rewrite(p.prompt), p.target) for p in pairs] if rewrite else list(pairs)


def draftable(method) -> bool:
    """Whether ``method``'s edited model computes, position by position, what the architecture's
    causal forward pass would: a vLLM engine can score it (weights or prompts edited), or its hook
    is ``position_wise``."""
    return "vllm" in method.scoring_backends or getattr(method, "position_wise", False)


@contextmanager
def drafting(probe, pairs: Sequence[ScoringPair], max_new_tokens: int, rule: str,
             enabled: bool = True) -> Iterator[None]:
    """Within: ``probe`` (or the probe a prompt rewrite wraps) decodes the answers to ``pairs``
    from its teacher-forced passes, while the model does not change; ``enabled`` False (a method
    whose forward computation is not the architecture's) does nothing."""
    target = getattr(probe, "inner", probe)
    if not enabled or not pairs or not isinstance(target, DraftingProbe):
        yield
        return
    target.expect(asked_pairs(probe, pairs), max_new_tokens, ANSWER_RULES[rule])
    try:
        yield
    finally:
        target.forget()
