"""Greedy answers decoded on from the teacher-forced pass (harness/evaluation/drafts.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from editbench.core.models import load_model
from editbench.core.probe import HFProbe
from editbench.core.records import ScoringPair
from editbench.harness.evaluation.drafts import Draft, DraftingProbe, decided, drafting

PROMPTS = ["Kalo lives in", "Fact: Kalo lives in", "Dan works as", "x", "Ru was born in",
           "Mir Vale is in", "Sel Hill", "Ostwen Ford lies in"]


def test_a_draft_decides_the_predictions_that_equal_the_target_and_the_next():
    stops = frozenset({0})
    draft = Draft(target=(5, 6, 7), predicted=(5, 6, 7), after=0)
    assert decided(draft, 10, stops) == ([5, 6, 7], True)  # the whole target, then a stop
    assert decided(Draft((5, 6, 7), (5, 6, 7), 9), 10, stops) == ([5, 6, 7, 9], False)
    assert decided(Draft((5, 6, 7), (5, 8, 3), 9), 10, stops) == ([5, 8], False)  # part here
    assert decided(Draft((5, 6, 7), (5, 0, 3), 9), 10, stops) == ([5], True)  # a stop first
    assert decided(Draft((5, 6, 7), (5, 6, 7), 9), 2, stops) == ([5, 6], True)  # the budget


def _pairs(probe: HFProbe) -> list[ScoringPair]:
    """Targets that the model's own greedy answers equal (whole), start (in part) or miss, and a
    prompt asked with two targets of different budgets."""
    own = probe.generate_answers([ScoringPair(p, "a b c d e") for p in PROMPTS], 8)
    pairs = []
    for prompt, answer in zip(PROMPTS, own):
        words = answer.split()
        if words:
            pairs.append(ScoringPair(prompt, answer.strip()))
            pairs.append(ScoringPair(prompt, f"{words[0]} Mir Vale Sel"))
        pairs.append(ScoringPair(prompt, "Kalo"))
    return pairs


POCKET = sorted((Path(__file__).parents[1] / "artifacts" / "models").glob("pocket-*"))


@pytest.fixture(params=["llama", "gpt2", "mistral", "gemma", "gemma2-window", "pocket"])
def model_path(request, micro_llama, micro_gpt2, world_tokenizer, tmp_path) -> Path:
    """Random micro models (most drafts part at the first token; Gemma 2 with a 4-token sliding
    window, which the prompts reach, so it is decoded as before) and the shipped pocket model
    (whose answers to its own facts end right after the target)."""
    from conftest import save_micro_gemma2, save_micro_model

    if request.param == "pocket":
        if not POCKET:
            pytest.skip("the shipped pocket model is absent")
        return POCKET[0]
    if request.param == "gemma2-window":
        return save_micro_gemma2(world_tokenizer, tmp_path, sliding_window=4)
    if request.param in ("mistral", "gemma"):
        return save_micro_model(request.param, world_tokenizer, tmp_path)
    return {"llama": micro_llama, "gpt2": micro_gpt2}[request.param]


@pytest.mark.parametrize("rule", ["editbench", "wild"])
def test_answers_from_the_pass_equal_greedy_decoding_and_read_no_prompt_again(
    model_path, rule, monkeypatch
):
    from editbench.core.generate import ANSWER_RULES
    from editbench.harness.evaluation import drafts

    ends: list[bool] = []
    monkeypatch.setattr(drafts, "decided", lambda *args: (found := decided(*args),
                                                          ends.append(found[1]))[0])
    model, tokenizer = load_model(model_path, torch.device("cpu"), torch.float32)
    plain = HFProbe(model, tokenizer, torch.device("cpu"))
    pairs = _pairs(plain)
    expected = plain.generate_answers(pairs, 6, ANSWER_RULES[rule])
    probe = DraftingProbe(model, tokenizer, torch.device("cpu"))
    widths: list[int] = []
    handle = model.register_forward_pre_hook(
        lambda _m, _a, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    try:
        with drafting(probe, pairs, 6, rule):
            scores = probe.score(pairs)
            widths.clear()
            got = probe.generate_answers(pairs, 6, ANSWER_RULES[rule])
            if not getattr(model.config, "sliding_window", None) == 4:  # no prompt read again
                assert all(width == 1 for width in widths)
        assert got == expected
        # every prompt drafted, but where a sequence reaches an attention window
        windowed = getattr(model.config, "sliding_window", None) == 4
        assert len(ends) == (0 if windowed else len({p.prompt for p in pairs}))
        if model_path in POCKET:  # answers that end in the pass, and answers decoded on
            assert any(ends) and not all(ends)
        assert scores == plain.score(pairs)  # teacher-forced scores as they were
        assert probe.generate_answers(pairs, 6, ANSWER_RULES[rule]) == expected  # after: plain
    finally:
        handle.remove()


def test_a_method_that_changes_the_forward_computation_is_decoded_as_before(micro_llama):
    model, tokenizer = load_model(micro_llama, torch.device("cpu"), torch.float32)
    probe = DraftingProbe(model, tokenizer, torch.device("cpu"))
    pairs = [ScoringPair(p, "Kalo") for p in PROMPTS]
    with drafting(probe, pairs, 6, "editbench", enabled=False):
        probe.score(pairs)
        assert not probe._answers


def test_a_pass_that_cannot_be_decoded_on_leaves_its_prompts_to_plain_decoding(
    micro_llama, monkeypatch, caplog
):
    from editbench.harness.evaluation import drafts

    model, tokenizer = load_model(micro_llama, torch.device("cpu"), torch.float32)
    plain = HFProbe(model, tokenizer, torch.device("cpu"))
    pairs = _pairs(plain)
    expected = plain.generate_answers(pairs, 6)
    probe = DraftingProbe(model, tokenizer, torch.device("cpu"))

    def broken(*args):
        raise RuntimeError("no such cache")

    monkeypatch.setattr(drafts.DraftingProbe, "_continue", broken)
    with drafting(probe, pairs, 6, "editbench"):
        probe.score(pairs)
        assert probe.generate_answers(pairs, 6) == expected
    assert "decoding on from the teacher-forced pass failed" in caplog.text


def test_grace_is_drafted_and_its_answers_equal_greedy_decoding(micro_llama):
    """GRACE tests each position's own input against its codebook, so the edited model stays
    causal: its answers are decoded on from the teacher-forced pass, codebook hits included; WISE
    routes a whole input and is not."""
    from test_memory_methods import RECORDS, _context

    from editbench.harness.evaluation.drafts import draftable
    from editbench.methods.grace import Grace, GraceConfig
    from editbench.methods.wise import Wise, WiseConfig

    ctx = _context(micro_llama)
    assert not draftable(Wise(WiseConfig(), ctx))
    method = Grace(GraceConfig(layer=1, eps=0.01, n_iter=100), ctx)
    method.prepare()
    method.apply(RECORDS)
    assert draftable(method)
    plain = HFProbe(ctx.model, ctx.tokenizer, ctx.device)
    pairs = _pairs(plain) + [ScoringPair(r.prompt, r.target_new) for r in RECORDS]
    expected = plain.generate_answers(pairs, 6)
    edit = ctx.encoder.encode(RECORDS[0].prompt, RECORDS[0].target_new)
    first = ctx.tokenizer.decode([edit.ids[edit.n_prompt]])  # the target's first token
    assert expected[-2].strip().startswith(first.strip())  # the codebook answers the edit
    probe = DraftingProbe(ctx.model, ctx.tokenizer, ctx.device)
    with drafting(probe, pairs, 6, "editbench", enabled=draftable(method)):
        probe.score(pairs)
        assert probe._answers  # drafted
        assert probe.generate_answers(pairs, 6) == expected
