"""Batched greedy decoding against Hugging Face's own ``generate``, one prompt at a time."""

from __future__ import annotations

import pytest
import torch

from editbench.core.generate import StopRule, greedy_decode
from editbench.core.models import load_model
from editbench.core.tokenize import PairEncoder

PROMPTS = ["Fact: Kalo Ved lives in", "The profession of Mirve Dan is", "x",
           "In short, the instrument of Brathe Ruqui is the",
           "As everyone knows, Selgal Hu was raised speaking", "Zu plays the",
           "A b c d e f g h i j k l m n o p"]


def _reference(model, encoder: PairEncoder, prompt: str, budget: int, stop: StopRule) -> list[int]:
    ids = torch.tensor([encoder.encode_prompt(prompt)])
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=budget,
        eos_token_id=sorted(stop.ids), pad_token_id=encoder.pad_id
    )
    new = out[0, ids.shape[1]:].tolist()
    return new[:-1] if new and new[-1] in stop.ids else new


@pytest.mark.parametrize("max_tokens", [10_000, 48])  # one padded batch, or many small ones
def test_batched_greedy_decoding_equals_generate_one_prompt_at_a_time(micro_model_path, max_tokens):
    model, tokenizer = load_model(micro_model_path, torch.device("cpu"), torch.float32)
    encoder = PairEncoder(tokenizer)
    stop = StopRule.for_model(model, tokenizer)
    budgets = [1, 3, 12, 6, 9, 2, 5]
    got = greedy_decode(
        model, encoder, PROMPTS, budgets, stop, torch.device("cpu"), max_tokens=max_tokens
    )
    expected = [_reference(model, encoder, p, b, stop) for p, b in zip(PROMPTS, budgets)]
    assert got == expected
    assert sum(map(len, got)) >= 20  # most rows decode to their budget: the comparison is not empty


@pytest.mark.parametrize("stop_kind", ["eos", "newline"])
def test_rows_stop_at_end_of_sequence_or_a_newline_and_not_before(micro_llama, stop_kind):
    model, tokenizer = load_model(micro_llama, torch.device("cpu"), torch.float32)
    encoder = PairEncoder(tokenizer)
    stop = StopRule.for_model(model, tokenizer)
    newline = next(i for i in sorted(stop.ids) if "\n" in tokenizer.decode([i]))
    target = tokenizer.eos_token_id if stop_kind == "eos" else newline
    assert target in stop.ids

    decoding = []  # whether the forward pass under way feeds one new token per row (not the prompt)

    def see_inputs(_module, args):
        decoding[:] = [args[0].shape[1] == 1]

    def after_the_first_answer_token(_module, _args, logits):
        if decoding[0]:
            logits = logits.clone()
            logits[..., target] += 1e4
        return logits

    handles = [model.get_input_embeddings().register_forward_pre_hook(see_inputs),
               model.get_output_embeddings().register_forward_hook(after_the_first_answer_token)]
    try:
        got = greedy_decode(model, encoder, PROMPTS, [6] * len(PROMPTS), stop, torch.device("cpu"))
        reference = [_reference(model, encoder, p, 6, stop) for p in PROMPTS]
    finally:
        for handle in handles:
            handle.remove()
    assert got == reference
    # one token (unless the model's first choice already stops it), then the stop token, which is
    # not kept
    assert all(len(answer) <= 1 for answer in got) and sum(map(len, got)) >= len(PROMPTS) - 2


def test_a_model_that_never_stops_is_cut_at_its_budget(micro_gpt2):
    model, tokenizer = load_model(micro_gpt2, torch.device("cpu"), torch.float32)
    got = greedy_decode(
        model, PairEncoder(tokenizer), PROMPTS[:3], [0, 4, 7], StopRule(frozenset()),
        torch.device("cpu")
    )
    assert [len(g) for g in got] == [0, 4, 7]


def test_a_cache_that_cannot_drop_rows_gives_the_same_answers(micro_llama, monkeypatch):
    import editbench.core.generate as generate

    model, tokenizer = load_model(micro_llama, torch.device("cpu"), torch.float32)
    encoder, stop = PairEncoder(tokenizer), StopRule.for_model(model, tokenizer)
    budgets = [1, 3, 12, 6, 9, 2, 5]
    compacted = greedy_decode(model, encoder, PROMPTS, budgets, stop, torch.device("cpu"))
    monkeypatch.setattr(generate, "_select_rows", lambda cache, keep: None)
    assert greedy_decode(model, encoder, PROMPTS, budgets, stop, torch.device("cpu")) == compacted
