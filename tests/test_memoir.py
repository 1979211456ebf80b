"""MEMOIR (issue 33): TopHash and the routing rule against a transcription of the release on a tiny
case, and the method's defining properties on a micro model: an edit writes only its mask's
columns, a prompt below the overlap threshold scores exactly as the unedited model, a rephrase above
it reads the memory through the edit's mask; state round trip and kill-and-resume."""

from __future__ import annotations

import pytest
import torch
from test_memory_methods import RECORDS, _context, _logits

from editbench.core.records import EditRecord
from editbench.methods.memoir import PRESETS, Memoir, MemoirConfig, best_match, top_hash


def release_top_hash(x: torch.Tensor, k: int, permutation: torch.Tensor) -> torch.Tensor:
    """qym7/MEMOIR ``TopHasher.get_active_indices`` and the mask built from it in
    ``new_weight_forward``, transcribed: indices of the top-k magnitudes, mapped through the
    permutation, set in a boolean vector."""
    _, indices = torch.topk(x.abs(), k)
    active = permutation[indices]
    mask = torch.zeros(x.shape[0], dtype=torch.bool)
    mask[active] = True
    return mask


def release_route(mask: torch.Tensor, stored: torch.Tensor, k: int, threshold: float) -> int:
    """The release's inference branch: overlap counts with each stored mask over k, the top match,
    the memory off below ``irr_threshold`` (-1 here), else read through the matched mask."""
    ratios = (mask.float() @ stored.T.float()) / k
    best, index = torch.topk(ratios, k=1)
    return int(index) if best.item() >= threshold else -1


def test_top_hash_is_the_releases_on_a_tiny_case():
    x = torch.tensor([0.1, -3.0, 0.5, 2.0, -0.2, 1.0, 0.0, -1.5])
    permutation = torch.tensor([3, 7, 0, 5, 1, 6, 2, 4])
    # top 3 magnitudes: indices 1 (3.0), 3 (2.0), 7 (1.5) -> columns 7, 5, 4
    expected = torch.zeros(8, dtype=torch.bool)
    expected[[7, 5, 4]] = True
    assert torch.equal(top_hash(x, 3, permutation), expected)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        x = torch.randn(64, generator=generator)
        permutation = torch.randperm(64, generator=generator)
        assert torch.equal(top_hash(x, 18, permutation), release_top_hash(x, 18, permutation))


def test_the_routing_rule_is_the_releases_on_a_tiny_case():
    stored = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0],
                           [0, 0, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    queries = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0],   # the first edit itself: overlap 1
                            [0, 1, 1, 1, 1, 0, 0, 0],   # 3/4 with the first, 3/4 with the second
                            [0, 0, 0, 1, 1, 1, 1, 0],   # 1/4 and 3/4
                            [0, 0, 0, 0, 0, 0, 1, 1]],  # 0 and 0
                           dtype=torch.bool)
    for threshold in (0.25, 0.5, 0.75, 1.0):
        ours = best_match(queries, stored, 4, threshold).tolist()
        assert ours == [release_route(q, stored, 4, threshold) for q in queries]
    assert best_match(queries, stored, 4, 0.5).tolist() == [0, 0, 1, -1]
    assert best_match(queries, stored[:0], 4, 0.5).tolist() == [-1] * 4


def _memoir(path, **settings):
    settings = {"n_iter": 5, "n_templates": 0, "lr": 1.0, **settings}
    method = Memoir(MemoirConfig(**settings), _context(path))
    method.prepare()
    return method


def test_an_edit_writes_only_the_columns_of_its_mask(micro_llama):
    method = _memoir(micro_llama, weight_decay=0.0)
    method.apply(RECORDS[:1])
    first = method.masks[0]
    assert first.sum() == method.k
    written = method.memory.abs().sum(0) > 0
    assert bool(written.any()) and not bool((written & ~first.to(written.device)).any())
    before = method.memory.clone()
    method.apply(RECORDS[1:])
    second = method.masks[-1].to(before.device)
    assert torch.equal(method.memory[:, ~second], before[:, ~second])


def test_the_releases_weight_decay_only_shrinks_the_columns_outside_the_mask(micro_llama):
    """SGD's weight decay (1e-5, the release's) reaches every column: outside the edit's mask the
    earlier edits' columns shrink by one common factor, at most (1 - lr*wd) per step, and unwritten
    columns stay exactly zero."""
    method = _memoir(micro_llama, weight_decay=1e-2)
    method.apply(RECORDS[:1])
    before = method.memory.clone()
    method.apply(RECORDS[1:])
    outside = ~method.masks[-1].to(before.device)
    kept = before[:, outside]
    now = method.memory[:, outside]
    assert torch.equal(now[kept == 0], kept[kept == 0])
    ratio = now[kept != 0] / kept[kept != 0]
    assert (1 - 1e-2) ** 5 - 1e-4 <= float(ratio.min()) <= float(ratio.max()) < 1
    assert float(ratio.max() - ratio.min()) < 1e-4


def test_a_prompt_below_the_threshold_scores_exactly_as_the_unedited_model(micro_llama):
    method = _memoir(micro_llama, threshold=1.0)
    unrelated = "Fact: Dara Voss lives in"
    clean = _logits(method.ctx, unrelated)
    method.apply(RECORDS[:1])
    assert method.routes([unrelated, RECORDS[0].prompt]) == [-1, 0]
    assert torch.equal(_logits(method.ctx, unrelated), clean)  # bit for bit: the hook is off
    assert not torch.allclose(_logits(method.ctx, RECORDS[0].prompt), _logits_unedited(
        micro_llama, RECORDS[0].prompt))


def _logits_unedited(path, prompt):
    return _logits(_context(path), prompt)


def _share(method, a: str, b: str) -> float:
    masks = [method.mask_of(method.prompt_input(p)) for p in (a, b)]
    return float((masks[0] & masks[1]).sum()) / method.k


def test_a_rephrase_above_the_threshold_reads_the_memory_through_the_edits_mask(micro_llama):
    probe = _memoir(micro_llama)
    edit = RECORDS[0]
    rephrase = "Fact: Kalo Mirve lives in the"
    unrelated = "Q: what does Tesk Aunor do"
    near, far = _share(probe, edit.prompt, rephrase), _share(probe, edit.prompt, unrelated)
    assert near < 1 and near - far >= 2 / probe.k  # the micro model's masks tell them apart
    threshold = (near + far) / 2
    method = _memoir(micro_llama, threshold=threshold)
    method.apply([edit])
    assert method.routes([edit.prompt, rephrase, unrelated]) == [0, 0, -1]
    # the rephrase reads the memory through the edit's stored mask, not its own
    x = method.prompt_input(rephrase)
    own = method.mask_of(x)
    stored = method.masks[0].to(own.device)
    assert not torch.equal(own, stored)
    base = _logits_unedited(micro_llama, rephrase)
    module = method.hooked_module()
    expected = x[None] @ module.weight.T + method.residual(x[None], stored)  # Llama: no bias
    captured = {}
    handle = module.register_forward_hook(lambda m, a, o: captured.update(out=o))
    try:
        edited = _logits(method.ctx, rephrase)
    finally:
        handle.remove()
    assert torch.allclose(captured["out"], expected, atol=1e-6)
    assert not torch.allclose(edited, base)


def test_the_scored_prompt_decides_for_its_target_tokens(micro_llama):
    """Teacher-forced scoring: a row whose tokens begin with a prompt the method was shown through
    ``scoring_prompt`` is routed by that prompt alone, as the release is by its prompt boundary."""
    method = _memoir(micro_llama, threshold=1.0)
    edit = RECORDS[0]
    method.apply([edit])
    ids = method.ctx.encoder.encode_many([(edit.prompt, edit.target_new)])
    batch = method.ctx.encoder.collate(ids)
    with torch.no_grad():
        unknown = method.ctx.model(input_ids=batch.input_ids).logits
    method.scoring_prompt(edit.prompt)
    with torch.no_grad():
        known = method.ctx.model(input_ids=batch.input_ids).logits
    clean = _context(micro_llama).model(input_ids=batch.input_ids).logits
    assert torch.equal(unknown, clean.detach())  # prompt and target together: overlap below 1.0
    assert not torch.allclose(known, clean.detach())  # the prompt alone: its own mask, overlap 1


def test_state_round_trip_restores_the_memory_behind_the_hooks(micro_llama):
    method = _memoir(micro_llama)
    method.apply(RECORDS)
    state = {k: v.clone() for k, v in method.state_dict().items()}
    restored = Memoir(MemoirConfig(n_iter=5, n_templates=0), _context(micro_llama))
    restored.load_state_dict(state)
    for prompt in (RECORDS[0].prompt, RECORDS[1].prompt, "The weather is nice"):
        assert torch.equal(_logits(restored.ctx, prompt), _logits(method.ctx, prompt))


def test_presets_are_the_releases_and_bad_settings_name_the_field():
    assert PRESETS["llama-3-8b"] == {"layer": 27, "n_iter": 30, "top_k": 4096, "threshold": 0.4}
    assert PRESETS["hallucination"] == {"threshold": 0.9}
    for field, value in (("threshold", 0.0), ("feature", "max"), ("top_k", 0),
                         ("n_templates", 11)):
        with pytest.raises(ValueError, match=field):
            MemoirConfig(**{field: value})


def test_edits_with_equal_masks_store_one(micro_llama):
    method = _memoir(micro_llama, n_iter=1)
    twin = EditRecord(uid="2", prompt=RECORDS[0].prompt, subject="Kalo Mirve",
                      target_new="Orun Bay")
    method.apply([RECORDS[0], twin])
    assert len(method.masks) == 1


def test_the_default_run_leaves_it_out_and_says_why(caplog):
    from editbench.harness.plan.resolve import default_methods

    with caplog.at_level("INFO"):
        chosen = default_methods()
    assert "memit" in chosen and "memoir" not in chosen
    assert "--methods memoir" in caplog.text


def test_a_row_keeps_its_own_decision_when_the_decoder_drops_another_of_its_length(micro_llama):
    """Greedy decoding drops finished rows from the batch: a row's held memory decision must follow
    it, even when the row dropped before it had a prompt of the same length (the length alone
    cannot tell them apart). Each prompt decoded in a batch equals it decoded alone."""
    from editbench.core.generate import StopRule, greedy_decode

    method = _memoir(micro_llama, threshold=1.0)
    edit = RECORDS[0]
    method.apply([edit])
    encoder = method.ctx.encoder
    same_length = [p for p in ("Fact: Dara Voss lives in", "Fact: Tesk Aunor lives in",
                               "Fact: Orun Bay lives in", "Fact: Lira Kest works as")
                   if len(encoder.encode_prompt(p)) == len(encoder.encode_prompt(edit.prompt))]
    assert same_length, "no unrelated prompt of the edit prompt's length in the micro vocabulary"
    other = same_length[0]
    assert method.routes([edit.prompt, other]) == [0, -1]
    stop = StopRule(frozenset())  # budgets alone end the answers
    device = method.ctx.device
    seen = []
    choices = method._choices
    method._choices = lambda x: seen.append(choices(x).tolist()) or torch.tensor(seen[-1])
    alone = [greedy_decode(method.ctx.model, encoder, [p], [b], stop, device)[0]
             for p, b in ((edit.prompt, 1), (other, 4))]
    seen.clear()
    together = greedy_decode(method.ctx.model, encoder, [edit.prompt, other], [1, 4], stop,
                             device)
    # the prompts' pass decides [0, -1]; once the edit's row is done, the other row reads no memory
    assert seen[0] == [0, -1] and seen[1:] == [[-1]] * 3
    assert together == alone


def test_a_decoding_batchs_kv_cache_is_freed_without_the_garbage_collector(micro_llama):
    """Following the decoder's row selection must not tie the KV cache into a reference cycle:
    every generation's cache would then wait for the collector (the cost check saw MEMOIR's peak at
    four times its plan)."""
    import gc
    import weakref

    from editbench.core.generate import StopRule, greedy_decode

    method = _memoir(micro_llama, threshold=1.0)
    method.apply(RECORDS[:1])
    caches = []
    backbone = getattr(method.ctx.model, "base_model", None) or method.ctx.model
    handle = backbone.register_forward_hook(
        lambda module, args, output: caches.append(weakref.ref(output.past_key_values)))
    gc.disable()
    try:
        greedy_decode(method.ctx.model, method.ctx.encoder, [RECORDS[0].prompt, "Fact: Dara"],
                      [1, 3], StopRule(frozenset()), method.ctx.device)
        assert caches and all(ref() is None for ref in caches)
    finally:
        gc.enable()
        handle.remove()


def test_memoir_edits_call_the_blocks_directly_and_train_as_the_models_forward_does(
        micro_llama, monkeypatch):
    """MEMOIR's hooks on the model keep each call's tokens and mask for routing and follow a KV
    cache; an edit's training reads neither (every row takes the edit's own mask), so they are
    declared idle and the training passes call the blocks from the hooked layer up directly: one
    model forward per edit instead of one per step, and bitwise the same memory and masks."""
    from editbench.methods import upper_blocks

    def edit(direct: bool):
        method = _memoir(micro_llama, n_iter=6, n_templates=2)
        model = method.ctx.model
        if not direct:
            monkeypatch.setattr(upper_blocks.UpperBlocks, "path", lambda self, batch: None)
        passes, forward = [], model.forward
        model.forward = lambda *a, **k: (passes.append(1), forward(*a, **k))[1]
        method.apply(RECORDS[:2])
        model.forward = forward
        monkeypatch.undo()
        return method.memory.clone(), method.masks.clone(), len(passes), method

    recomputed, recomputed_masks, recomputed_passes, _ = edit(False)
    direct, direct_masks, direct_passes, method = edit(True)
    assert direct_passes < recomputed_passes
    assert direct_passes == recomputed_passes - 2 * 5  # each edit's later steps skip the model
    assert torch.equal(direct, recomputed) and torch.equal(direct_masks, recomputed_masks)
    # the routing after the edits reads the call's tokens again through the hooks
    assert method.routes([RECORDS[0].prompt]) == [0]
