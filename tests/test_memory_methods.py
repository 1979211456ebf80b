"""GRACE, WISE, the retrieval baseline and LocFT-BF: each checked against its defining property."""

from __future__ import annotations

import pytest
import torch

from editbench.core.models import ModelLayout, load_model
from editbench.core.probe import HFProbe, RewrittenPrompts
from editbench.core.records import EditRecord, Neighbour, ScoringPair
from editbench.methods import EditContext, upper_blocks
from editbench.methods.grace import Grace, GraceConfig
from editbench.methods.locft import LocFTBF, LocFTConfig
from editbench.methods.retrieval import BM25, Retrieval, RetrievalConfig
from editbench.methods.wise import Wise, WiseConfig, converged, ties_merge


def _context(path, train=()):
    model, tokenizer = load_model(path, torch.device("cpu"), torch.float32)
    return EditContext(
        model=model, tokenizer=tokenizer, layout=ModelLayout.of(model), device=torch.device("cpu"),
        cache_dir=path, task=None, seed=0, generator=torch.Generator().manual_seed(0),
        train_records=lambda: list(train)
    )


RECORDS = [
    EditRecord(uid="0", prompt="Fact: Kalo Mirve lives in", subject="Kalo Mirve",
               target_new="Fengal Vale",
               neighbours=(Neighbour("Fact: Dara Voss lives in", "Orun Bay"),)),
    EditRecord(uid="1", prompt="Fact: Tesk Aunor works as", subject="Tesk Aunor",
               target_new="a baker",
               neighbours=(Neighbour("Fact: Milo Brandt works as", "a smith"),)),
]


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _logits(ctx, prompt):
    ids = torch.tensor([ctx.encoder.encode_prompt(prompt)])
    with torch.no_grad():
        return ctx.model(input_ids=ids).logits


# -- retrieval -----------------------------------------------------------------------------------
def test_retrieval_changes_no_weight_and_leaves_a_prompt_with_no_relevant_edit_unchanged(
    micro_llama
):
    ctx = _context(micro_llama)
    before = _weights(ctx.model)
    method = Retrieval(RetrievalConfig(), ctx)
    method.apply(RECORDS)
    assert all(torch.equal(p, before[n]) for n, p in ctx.model.named_parameters())
    assert method.edited_parameters() == []
    assert method.scoring_prompt("The weather is nice") == "The weather is nice"
    shown = method.scoring_prompt("Where does Kalo Mirve live?")
    assert shown == "New fact: Fact: Kalo Mirve lives in Fengal Vale.\nWhere does Kalo Mirve live?"


def test_retrieval_state_survives_a_resume_and_the_probe_scores_the_rewritten_prompt(micro_llama):
    ctx = _context(micro_llama)
    method = Retrieval(RetrievalConfig(top_k=1), ctx)
    method.apply(RECORDS)
    resumed = Retrieval(RetrievalConfig(top_k=1), ctx)
    resumed.load_state_dict(method.state_dict())
    prompt = "Fact: Tesk Aunor works as"
    assert resumed.scoring_prompt(prompt) == method.scoring_prompt(prompt) != prompt
    probe = HFProbe(ctx.model, ctx.tokenizer, ctx.device)
    pair = ScoringPair(prompt, "a baker")
    wrapped = RewrittenPrompts(probe, resumed.scoring_prompt)
    assert wrapped.score([pair]) == probe.score(
        [ScoringPair(resumed.scoring_prompt(prompt), "a baker")]
    )


BM25_SCORES = """
import json
from editbench.methods.retrieval import BM25
index = BM25(1.2, 0.75)
for text in ("amber river north lantern cobalt", "river lantern quartz meadow amber cobalt",
             "north cobalt meadow quartz", "lantern amber north river meadow quartz cobalt"):
    index.add(text)
scores = index.scores("amber river north lantern cobalt quartz meadow")
print(json.dumps({i: repr(v) for i, v in sorted(scores.items())}))
"""


def test_bm25_scores_are_the_same_whatever_the_string_hash_seed():
    """A query's terms are summed in the query's order, not a set's, whose order follows the
    process's string hash: tied facts swapped places between two runs of one command."""
    import os
    import subprocess
    import sys

    seen = {
        subprocess.run([sys.executable, "-c", BM25_SCORES], capture_output=True, text=True,
                       check=True, env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout
        for seed in range(3)
    }
    assert len(seen) == 1, seen


def test_bm25_ranks_the_document_sharing_the_rarest_terms_first():
    index = BM25(1.2, 0.75)
    for text in ("Kalo Mirve lives in", "Tesk Aunor lives in", "Dara Voss lives in"):
        index.add(text)
    scores = index.scores("where does Tesk live")
    assert max(scores, key=scores.get) == 1
    assert index.scores("nothing shared") == {}


# -- GRACE ---------------------------------------------------------------------------------------
def test_grace_is_bit_identical_outside_every_radius_and_returns_the_codebook_value_inside(
    micro_llama
):
    ctx = _context(micro_llama)
    unrelated = "The weather is nice"
    reference = _logits(ctx, unrelated)
    method = Grace(GraceConfig(layer=1, eps=1e-3, n_iter=20, lr=0.5), ctx)
    method.prepare()
    module = ctx.model.get_submodule(method.module_name())
    method.apply(RECORDS)
    assert len(method.labels) == 2
    assert torch.equal(_logits(ctx, unrelated), reference)  # outside: the very same output
    seen = {}
    # after GRACE's own hook
    handle = module.register_forward_hook(lambda m, a, o: seen.update(out=o))
    try:
        encoded = ctx.encoder.encode(RECORDS[0].prompt, RECORDS[0].target_new)
        with torch.no_grad():
            ctx.model(input_ids=torch.tensor([encoded.ids]))
    finally:
        handle.remove()
    assert torch.equal(seen["out"][0, encoded.n_prompt - 1], method.values[0])
    before = _weights(ctx.model)
    assert all(torch.equal(p, before[n]) for n, p in ctx.model.named_parameters())


def test_grace_teaches_the_edit_at_the_key_token(micro_llama):
    """A radius small enough to hold the last prompt token alone: its value is trained to predict
    the target's first token there (one value at one layer is what a GRACE entry is)."""
    ctx = _context(micro_llama)
    method = Grace(GraceConfig(layer=1, eps=0.01, n_iter=100), ctx)
    method.prepare()
    probe = HFProbe(ctx.model, ctx.tokenizer, ctx.device)
    pair = ScoringPair(RECORDS[0].prompt, RECORDS[0].target_new)
    encoded = ctx.encoder.encode(pair.prompt, pair.target)
    before = probe.score([pair])[0]
    assert before.predictions[0] != encoded.ids[encoded.n_prompt]
    method.apply(RECORDS[:1])
    after = probe.score([pair])[0]
    assert after.predictions[0] == encoded.ids[encoded.n_prompt]
    assert after.logprob > before.logprob


def test_grace_measures_a_trained_edit_against_the_codebook_once_and_trains_the_same_value(
        micro_llama, monkeypatch):
    """An edit's steps feed the layer the same input and move only the trained value, so the
    codebook lookup of its first step serves them all: one lookup per edit while it trains, and
    the very codebook that a lookup at every step gives."""
    records = [EditRecord(uid=str(i), prompt=f"Fact: Kalo {i} lives in", subject=f"Kalo {i}",
                          target_new="Fengal Vale" if i % 2 else "Orr") for i in range(4)]

    def edit(every_step: bool) -> tuple[dict[str, torch.Tensor], int]:
        method = Grace(GraceConfig(layer=1, eps=1.0, n_iter=6), _context(micro_llama))
        method.prepare()
        looked_up, lookup = [], Grace.lookup

        def counting(self, inputs):
            looked_up.append(self._training is not None)
            return lookup(self, inputs)

        monkeypatch.setattr(Grace, "lookup", counting)
        # the model's forward at every step (the direct path's one trial would add a lookup)
        monkeypatch.setattr(upper_blocks.UpperBlocks, "keep", lambda *args: None)
        if every_step:
            monkeypatch.setattr(Grace, "_lookup_once", lambda self, flat: self.lookup(flat))
        method.apply(records)
        monkeypatch.undo()
        return method.state_dict(), sum(looked_up)

    every, every_count = edit(every_step=True)
    once, once_count = edit(every_step=False)
    assert every_count == 6 * len(records)
    assert once_count == len(records)
    for name in ("keys", "values", "radii"):
        assert torch.equal(every[name], once[name]), name


def test_grace_splits_radii_for_a_conflicting_edit_and_expands_for_the_same_target(micro_llama):
    method = Grace(GraceConfig(eps=1.0), _context(micro_llama))
    key = torch.zeros(64)
    assert method.place(key, "a") == 0
    near = key.clone()
    near[0] = 0.6  # within eps + radius of key 0
    # another target: a new entry, both radii halve the distance
    assert method.place(near, "b") == 1
    assert torch.allclose(method.radii, torch.tensor([0.3 - 1e-5, 0.3]))
    farther = key.clone()
    farther[1] = 0.5
    assert method.place(farther, "a") == 0  # the same target: the radius grows to cover it
    assert float(method.radii[0]) == 0.5
    method.place(key + 5.0, "c")  # beyond eps + radius: a fresh entry with eps
    assert float(method.radii[-1]) == 1.0


def test_grace_keeps_an_expanded_keys_query_inside_its_radius_in_a_batch_of_any_shape(micro_llama):
    """A radius set to a query's distance must hold that query when the layer tests it among many
    rows (cdist's matrix-product form rounds differently by shape; a miss left the trained value
    without a gradient)."""
    # queries below lie 0.3-0.6 off: coverage
    method = Grace(GraceConfig(eps=0.3), _context(micro_llama))
    generator = torch.Generator().manual_seed(0)
    keys = torch.randn(40, 256, generator=generator) * 3  # far apart: each query below adds a key
    for i, key in enumerate(keys):
        method.place(key, f"t{i}")
    misses = 0
    for i in range(40):
        # near key i, same target: coverage
        query = keys[i] + torch.randn(256, generator=generator) * 0.03
        assert method.place(query, f"t{i}") == i and float(method.radii[i]) > 0.3
        batch = torch.cat([torch.randn(18, 256, generator=generator) * 3, query[None]])
        nearest, inside = method.lookup(batch)
        misses += int(nearest[-1] != i or not inside[-1])
    assert misses == 0


def test_grace_holds_a_keys_query_whose_distance_another_device_rounds_a_few_ulps_larger(
    micro_llama
):
    """The radius is set on the CPU and tested where the layer runs: on an H200 a key's own query
    came out a few ulps outside and its value got no gradient. A few ulps stay inside; a thousandth
    does not."""
    method = Grace(GraceConfig(eps=1.0), _context(micro_llama))
    key = torch.randn(256, generator=torch.Generator().manual_seed(0))
    method.place(key, "a")
    query = key.clone()
    # beyond eps from nothing else: the same target expands the radius to this distance
    query[0] += 1.5
    method.place(query, "a")
    radius = method.radii[0].clone()
    for _ in range(8):  # as if the other device's norm came out 8 ulps larger
        method.radii[0] = torch.nextafter(method.radii[0], torch.tensor(0.0))
    assert bool(method.lookup(query[None])[1][0])
    method.radii[0] = radius / 1.001
    assert not bool(method.lookup(query[None])[1][0])


def test_grace_bounds_its_distance_matrix_by_the_number_of_keys(micro_llama, monkeypatch):
    """The lookup's rows x keys distance matrix stays within DISTANCE_ELEMENTS as the codebook
    grows, with the same nearest keys and the same inside/outside answers as one unbounded
    matrix."""
    import editbench.methods.grace as grace

    method = Grace(GraceConfig(eps=1.0), _context(micro_llama))
    generator = torch.Generator().manual_seed(0)
    for i, key in enumerate(torch.randn(30, 32, generator=generator) * 3):
        method.place(key, f"t{i}")
    rows = torch.cat([method.keys[:10] + 0.01, torch.randn(90, 32, generator=generator) * 3])
    expected = method.lookup(rows)
    sizes = []
    cdist = torch.cdist
    monkeypatch.setattr(
        grace.torch, "cdist", lambda a, b: sizes.append(a.shape[0] * b.shape[0]) or cdist(a, b)
    )
    monkeypatch.setattr(grace, "DISTANCE_ELEMENTS", 300)  # 10 rows of 30 keys at a time
    nearest, inside = method.lookup(rows)
    assert max(sizes) <= 300 and len(sizes) == 10
    assert (
        torch.equal(nearest, expected[0])
        and torch.equal(inside, expected[1])
        and bool(inside[:10].all())
    )


def test_grace_state_roundtrip_restores_the_codebook_behind_the_hook(micro_llama):
    ctx = _context(micro_llama)
    method = Grace(GraceConfig(layer=1, n_iter=5), ctx)
    method.prepare()
    method.apply(RECORDS)
    edited = _logits(ctx, RECORDS[0].prompt)
    fresh_ctx = _context(micro_llama)
    resumed = Grace(GraceConfig(layer=1, n_iter=5), fresh_ctx)
    resumed.prepare()
    resumed.load_state_dict(method.state_dict())
    resumed.load_state_dict(method.state_dict())  # a second load installs no second hook
    assert torch.equal(_logits(fresh_ctx, RECORDS[0].prompt), edited)


# -- WISE ----------------------------------------------------------------------------------------
#: train-split facts: WISE's unrelated rows
TRAIN = [
    EditRecord(uid="t0", prompt="Fact: Orla Pense lives in", subject="Orla Pense",
               target_new="Vey Moor", target_true="Ash Ford"),
    EditRecord(uid="t1", prompt="Fact: Brin Talo works as", subject="Brin Talo",
               target_new="a poet", target_true="a miller"),
]


def _wise(micro_llama, **settings):
    ctx = _context(micro_llama, TRAIN)
    config = WiseConfig(
        **{"layer": 1, "n_iter": 30, "n_templates": 2, "act_margin": (0.5, 2.0, 1.0), **settings}
    )
    method = Wise(config, ctx)
    method.prepare()
    return ctx, method


def test_wise_routes_unrelated_prompts_to_main_memory_and_the_edit_to_the_side(micro_llama):
    """A trained toy: one edit, at a learning rate and bound scaled to the micro model's activations
    (about a hundred times smaller than a 7B model's, so the release's lr 1.0 barely moves them)."""
    ctx, method = _wise(micro_llama, lr=1000.0, norm_constraint=100.0, mask_ratio=1.0, n_iter=100)
    record = RECORDS[0]
    unrelated = ["The weather is nice", "Fact: Milo Brandt works as a smith",
                 f"{record.neighbours[0].prompt} {record.neighbours[0].answer}"]
    reference = [_logits(ctx, p) for p in unrelated]
    assert method.routes(unrelated) == [-1, -1, -1]  # no memory holds an edit yet
    method.apply([record])
    assert method.routes([f"{record.prompt} {record.target_new}"]) == [0]
    assert method.routes(unrelated) == [-1, -1, -1]
    # main memory, untouched
    assert all(torch.equal(_logits(ctx, p), r) for p, r in zip(unrelated, reference))
    assert method.edited_parameters() == []


def test_wise_trains_on_no_prompt_that_specificity_or_generalization_scores(micro_llama):
    """WISE's unrelated row was the edited record's first neighbour, the very prompt specificity
    scores (issue 28): the test set leaked into training. It is now a train-split record's prompt
    with its true answer; on the pocket world, whose train records' own neighbours are often the
    evaluated edits' neighbours, no scored prompt reaches training."""
    from editbench.core.task import TaskOptions
    from editbench.tasks.pocket import PocketConfig, PocketTask

    task = PocketTask(TaskOptions(), PocketConfig(n_entities=20))
    edits, train = task.load("eval")[:6], task.load("train")
    ctx = _context(micro_llama, train)
    method = Wise(WiseConfig(layer=1, n_iter=2, n_templates=1), ctx)
    method.prepare()
    trained: list[str] = []
    encode_many = ctx.encoder.encode_many

    def recording(pairs, *args, **kwargs):
        trained.extend(prompt for prompt, _ in pairs)
        return encode_many(pairs, *args, **kwargs)

    ctx.encoder.encode_many = recording
    method.apply(edits)
    scored_elsewhere = (
        {n.prompt for r in edits for n in r.neighbours}
        | {p for r in edits for p in r.paraphrases}
    )
    assert trained and not set(trained) & scored_elsewhere
    unrelated = set(trained) - {
        template.format(r.prompt) for template in method.templates for r in edits
    }
    assert unrelated and unrelated <= {r.prompt for r in train}


def test_wise_side_memory_trains_in_float32_on_a_bf16_model(micro_llama):
    """The release edits a float32 model (EasyEdit ``editor.py:115``): on a bf16 model the side
    memory still trains in float32, so updates finer than bf16's spacing are kept."""
    model, tokenizer = load_model(micro_llama, torch.device("cpu"), torch.bfloat16)
    ctx = EditContext(model=model, tokenizer=tokenizer, layout=ModelLayout.of(model),
                      device=torch.device("cpu"), cache_dir=micro_llama, task=None, seed=0,
                      generator=torch.Generator().manual_seed(0), train_records=lambda: TRAIN,
                      master_copies=True)
    method = Wise(WiseConfig(layer=1, n_iter=5, n_templates=1, lr=1e-3), ctx)
    method.prepare()
    weight = method.hooked_module().weight
    assert method.original.dtype == method.side.dtype == torch.float32
    assert torch.equal(method.original, weight.float())
    method.apply(RECORDS[:1])
    delta = method.side - method.original
    lost_in_bf16 = method.side.bfloat16().float() - method.original
    assert method.side.dtype == torch.float32 and bool(delta.any())
    assert int((delta != 0).sum()) > int((lost_in_bf16 != 0).sum())  # bf16 would round some away
    assert weight.dtype == torch.bfloat16 and method.edited_parameters() == []


def test_wise_templates_put_the_prompt_after_a_space_as_the_release_does(micro_llama):
    """EasyEdit's context templates are the generated prefix, a space and the prompt
    (``utils.py:447``); editbench once put ". " between them."""
    ctx, method = _wise(micro_llama, n_templates=3)
    assert method.templates[0] == "{}" and len(method.templates) == 4
    ctx.tokenizer.decode = lambda *args, **kwargs: "I went to the {market}"  # the generated prefix
    assert method._context_templates() == ["I went to the market {}"] * 3


def test_wise_takes_the_highest_scoring_memory_above_its_threshold(micro_llama):
    ctx, method = _wise(micro_llama)
    weight = method.original
    x = torch.randn(1, 3, weight.shape[1])
    main = method._project(x, weight)
    strong, weak = weight + 1.0, weight + 0.01
    method.memories, method.memory_min = [weak, strong], [0.0, 1e9]
    # the strong memory's score is below its threshold
    assert method._choose(x, main).tolist() == [0]
    method.memory_min = [0.0, 0.0]
    assert method._choose(x, main).tolist() == [1]  # both qualify: the higher score wins
    method.memory_min = [1e9, 1e9]
    assert method._choose(x, main).tolist() == [-1]  # none qualifies: main memory


def test_a_wise_memory_must_outscore_the_current_shard_even_below_its_threshold(micro_llama):
    """The release (``WISE.py:531-550``) starts the best score at the current shard's, whether or
    not the shard clears its own threshold: a memory that qualifies but scores below the shard
    leaves the sequence in main memory (editbench used to route it to that memory)."""
    ctx, method = _wise(micro_llama)
    weight = method.original
    x = torch.randn(1, 3, weight.shape[1])
    main = method._project(x, weight)
    method.side, method.shard_min = weight + 1.0, 1e9  # a strong shard, below its threshold
    method.memories, method.memory_min = [weight + 0.01], [0.0]  # a weak memory, above its own
    assert method._choose(x, main).tolist() == [-1]
    method.side = weight + 0.001  # the shard now scores below the memory
    assert method._choose(x, main).tolist() == [1]


def test_wise_pad_in_scores_counts_padded_positions_as_the_release_does(micro_llama):
    """Off, a padded row scores what it scores alone; with ``pad_in_scores`` (the release's
    ``euc`` without a mask, ``WISE.py:30-45``) its padded positions count too."""
    scores = {}
    for on in (False, True):
        ctx, method = _wise(micro_llama, pad_in_scores=on)
        weight = method.original
        x = torch.randn(2, 5, weight.shape[1], generator=torch.Generator().manual_seed(1))
        x[1, 3:] *= 10  # row 1's padded positions: far larger distances than its real ones
        side = weight + 0.5
        method._mask_row = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
        padded = method.score(x, method._project(x, weight), side)[1]
        method._mask_row = None
        alone = method.score(x[1:, :3], method._project(x[1:, :3], weight), side)[0]
        scores[on] = (padded, alone)
    assert torch.allclose(*scores[False])
    assert scores[True][0] > 1.5 * scores[True][1]


def test_wise_pad_in_scores_trains_on_the_release_batch_and_moves_the_threshold(micro_llama):
    """The release trains on a batch padded on the left with EOS (``editor.py:150, 178-181``) and
    its threshold averages over the pads; editbench's default pads on the right and leaves them
    out. The same edit from the same start then ends at another threshold."""
    thresholds, batches = {}, {}
    for on in (False, True):
        # ten templates: rows of 26 to 47 tokens, up to 21 pads (one step: no rounding grows)
        ctx, method = _wise(micro_llama, pad_in_scores=on, n_iter=2, n_templates=10)
        collate = ctx.encoder.collate
        ctx.encoder.collate = (lambda *a, on=on, collate=collate, **k:
                               batches.setdefault(on, collate(*a, **k)))
        method.apply(RECORDS[:1])
        thresholds[on] = method.shard_min
    off, on = batches[False], batches[True]
    assert not off.attention_mask.all()  # template rows of different lengths: padded
    assert (off.attention_mask[:, 0] == 1).all() and (on.attention_mask[:, -1] == 1).all()
    eos = ctx.tokenizer.eos_token_id
    assert on.input_ids[on.attention_mask == 0].eq(eos).all()
    assert torch.equal(off.labels[off.target_mask], on.labels[on.target_mask])
    assert abs(thresholds[True] - thresholds[False]) > 0.02 * thresholds[False]  # 6% here


def test_wise_route_by_batch_mean_routes_a_call_together(micro_llama):
    """The release routes a forward call by the mean of its rows' scores (``WISE.py:534-540``):
    an edited row and an unrelated one go together, where editbench routes each by its own."""
    routes = {}
    for on in (False, True):
        ctx, method = _wise(micro_llama, route_by_batch_mean=on)
        weight = method.original
        x = torch.randn(2, 3, weight.shape[1], generator=torch.Generator().manual_seed(1))
        x[1] = 0  # no distance: the unrelated row scores 0
        main = method._project(x, weight)
        method.side = weight + 1.0
        edited = float(method.score(x, main, method.side)[0])
        for share in (0.9, 0.4):  # threshold above / below the mean of the two rows
            method.shard_min = share * edited / method.config.act_ratio
            routes[on, share] = method._choose(x, main).tolist()
    assert routes[False, 0.9] == routes[False, 0.4] == [0, -1]
    assert routes[True, 0.9] == [-1, -1] and routes[True, 0.4] == [0, 0]


def test_wise_route_by_batch_mean_scores_a_long_call_by_its_largest_distance(micro_llama):
    """Over 100 positions the release scores a row by its largest distance (``WISE.py:37-39``)."""
    ctx, method = _wise(micro_llama, route_by_batch_mean=True)
    _, per_row = _wise(micro_llama)
    weight = method.original
    x = torch.zeros(1, 101, weight.shape[1])
    x[0, 50] = torch.randn(weight.shape[1], generator=torch.Generator().manual_seed(1))
    main = method._project(x, weight)
    method.side = per_row.side = weight + 1.0
    peak = float(method.score(x, main, method.side)[0]) * 101  # the one nonzero distance
    method.shard_min = per_row.shard_min = 0.5 * peak / method.config.act_ratio
    assert method._choose(x, main).tolist() == [0]
    assert per_row._choose(x, main).tolist() == [-1]  # its mean, peak / 101
    assert method._choose(x[:, :100], main[:, :100]).tolist() == [-1]  # 100: the mean


def test_wise_release_early_stop_reads_the_losses_before_the_current_one():
    """The release's meter is read before this step's loss enters it (``WISE.py:168-170``,
    ``utils.py:393-401``): on the same losses it stops one step later than editbench's rule."""
    losses = [3.0, 2.0, 0.01, 0.01, 0.01, 0.01]

    def first_stop(on_previous):
        return next(i for i in range(1, len(losses) + 1)
                    if converged(losses[:i], on_previous)) - 1

    assert first_stop(False) == 3 and first_stop(True) == 4
    assert not converged([0.5, 0.5]) and not converged([0.01], on_previous=True)


def test_wise_easyedit_preset_turns_on_the_release_computation():
    from editbench.core.method import MethodRef

    config = MethodRef.parse("wise@easyedit").config({}, architecture="llama-2-7b")
    assert config.pad_in_scores and config.route_by_batch_mean and config.stop_on_previous_loss
    assert config.n_templates == 10 and config.n_iter == 70  # the model's own preset underneath
    default = MethodRef.parse("wise").config({})
    assert not (default.pad_in_scores or default.route_by_batch_mean
                or default.stop_on_previous_loss)


def test_wise_stores_shards_and_merges_them(micro_llama):
    ctx, method = _wise(micro_llama, save_freq=1, merge_freq=2, n_iter=5)
    method.apply(RECORDS)
    assert len(method.memories) == 1  # two one-edit shards, merged into one memory
    assert method.shard_min == float("inf") and torch.equal(method.side, method.original)
    resumed_ctx, resumed = _wise(micro_llama, save_freq=1, merge_freq=2, n_iter=5)
    resumed.load_state_dict(method.state_dict())
    assert torch.equal(_logits(resumed_ctx, RECORDS[0].prompt), _logits(ctx, RECORDS[0].prompt))


def test_ties_merge_keeps_the_top_entries_and_averages_those_agreeing_in_sign():
    base = torch.zeros(4)
    a = torch.tensor([1.0, -2.0, 0.1, 3.0])
    b = torch.tensor([3.0, 1.0, 0.2, -1.0])
    merged = ties_merge(base, [a, b], [0.5, 0.5], density=0.5)
    # a keeps -2 and 3; b keeps 3, 1 and -1 (a tie at the cut); elected signs +, -, 0, +; the
    # agreeing mean
    assert torch.allclose(merged, torch.tensor([3.0, -2.0, 0.0, 3.0]))


# -- LocFT-BF ------------------------------------------------------------------------------------
def test_locft_touches_only_its_layer(micro_llama):
    ctx = _context(micro_llama)
    before = _weights(ctx.model)
    method = LocFTBF(LocFTConfig(layer=1, steps=3, stop_loss=0), ctx)
    method.apply(RECORDS)
    changed = {n for n, p in ctx.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(method.edited_parameters()) == {"model.layers.1.mlp.down_proj.weight"}
    block = LocFTBF(LocFTConfig(layer=1, scope="block"), ctx).edited_parameters()
    assert set(block) == {n for n in before if n.startswith("model.layers.1.")} and len(block) > 5


def test_locft_steps_breadth_first_with_eos_in_the_target(micro_llama):
    ctx = _context(micro_llama)
    records = [EditRecord(uid=str(i), prompt=f"Fact: person {i} lives in", subject=str(i),
                          target_new="Vale")
               for i in range(5)]
    seen: list[list[str]] = []
    method = LocFTBF(LocFTConfig(steps=3, chunk=2, stop_loss=0), ctx)
    original = method._loss
    method._loss = lambda chunk, *rest: (seen.append([r.uid for r in chunk]),
                                         original(chunk, *rest))[1]
    method.apply(records)
    epochs = [sum(seen[3 * e:3 * e + 3], []) for e in range(3)]
    # every edit once per epoch
    assert all(sorted(epoch) == [r.uid for r in records] for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1  # in a fresh order
    assert method.target(records[0]) == "Vale</s>"
    whole = []
    method = LocFTBF(LocFTConfig(steps=2, stop_loss=0), _context(micro_llama))
    original = method._loss
    method._loss = lambda chunk, *rest: (whole.append([r.uid for r in chunk]),
                                         original(chunk, *rest))[1]
    state = method.ctx.generator.get_state()
    method.apply(records)
    # a batch within one mini-batch: every step sees every edit, in the batch's order (a shuffle
    # would only reorder the rows of one step), and no order is drawn
    assert whole == [[r.uid for r in records]] * 2
    assert torch.equal(method.ctx.generator.get_state(), state)


# -- the runner's side of the protocol -----------------------------------------------------------
def test_the_runner_scores_a_hook_method_with_hf_and_a_rewriting_one_through_its_rewrite(
    micro_llama, caplog
):
    import logging
    from types import SimpleNamespace

    import pytest

    from editbench.harness.running.runner import Runner

    ctx = _context(micro_llama)
    runner = SimpleNamespace(
        backend="vllm", device=ctx.device, _probe=lambda *a: pytest.fail("asked for vLLM"),
        prompt_format=ctx.prompt_format,
    )
    with caplog.at_level(logging.INFO):
        probe = Runner._method_probe(
            runner, Grace(GraceConfig(), ctx), ctx.model, ctx.tokenizer, []
        )
    assert isinstance(probe, HFProbe)
    assert "grace: scored with the HF backend instead of vllm" in caplog.text
    engine = HFProbe(ctx.model, ctx.tokenizer, ctx.device)
    runner._probe = lambda *a: engine
    wrapped = Runner._method_probe(
        runner, Retrieval(RetrievalConfig(), ctx), ctx.model, ctx.tokenizer, []
    )
    # retrieval runs on vLLM too
    assert isinstance(wrapped, RewrittenPrompts) and wrapped.inner is engine
    assert Runner._method_probe(
        runner, LocFTBF(LocFTConfig(), ctx), ctx.model, ctx.tokenizer, []
    ) is engine


def test_every_published_preset_builds_and_names_a_known_model_or_a_release():
    from editbench.core.architectures import ARCHITECTURES
    from editbench.core.method import MethodRef

    known = {a.name for a in ARCHITECTURES}
    for cls in (Grace, Wise, Retrieval, LocFTBF):
        for preset in cls.presets:
            assert preset in known or preset in (
                "release", "wikibigedit", "easyedit", "small-model"
            ), (cls.name, preset)
            MethodRef.parse(f"{cls.name}@{preset}").config({})
    # the release tunes block 23
    assert MethodRef.parse("locft-bf").config({}, "mistral-7b").scope == "block"


def test_locft_presets_name_the_checkpoint_the_release_tuned_them_for(caplog):
    """The release's yamls are for Meta-Llama-3-8B-Instruct, Qwen2.5-7B-Instruct and
    Mistral-7B-v0.1 (hparams/*.yaml:1); editbench matches them by shape, and says which checkpoint
    the settings were tuned for when it picks one."""
    from click.testing import CliRunner

    from editbench.harness.cli.group import main
    from editbench.harness.plan.resolve import method_setups
    from editbench.harness.plan.settings import RunSpec

    assert set(LocFTBF.preset_checkpoints) == {"llama-3-8b", "qwen2.5-7b", "mistral-7b"}
    notes: list[str] = []
    with caplog.at_level("INFO"):
        (setup,) = method_setups(RunSpec(methods=("locft-bf",)), "llama-3-8b", notes)
    assert setup.config.layer == 22
    assert "locft-bf@llama-3-8b), which the release tuned for meta-llama/Meta-Llama-3-8B-Instruct" \
        in notes[0]
    assert "every llama-3-8b-shaped checkpoint is matched" in notes[0]
    listed = CliRunner().invoke(main, ["list", "--presets"]).output
    assert ("@mistral-7b (picked by the model; tuned for mistralai/Mistral-7B-v0.1 "
            "(hparams/mistral-7b.yaml)): layer=23") in listed
    # a method without a named checkpoint keeps the old note
    (ftm,) = method_setups(RunSpec(methods=("ft-m",)), "llama-3-8b", notes)
    assert notes[-1] == ("ft-m: taking the settings published for llama-3-8b (preset "
                         "ft-m@llama-3-8b), under anything set by hand")


def test_grace_on_a_published_7b_model_without_an_easyedit_file_trains_easyedit_s_7b_steps():
    """Issue 28: Mistral-7B got the pocket model's 10 steps; every EasyEdit file for a 3-9B decoder
    uses 50."""
    from editbench.core.architectures import ARCHITECTURES
    from editbench.core.method import MethodRef

    pocket = MethodRef.parse("grace").config({}, None).n_iter
    for arch in ARCHITECTURES:
        if arch.name in ("gpt2", "gpt2-xl"):
            continue
        steps = MethodRef.parse("grace").config({}, arch.name).n_iter
        assert steps >= 50 > pocket, arch.name


# -- the blocks below the memory's layer, replayed -----------------------------------------------
@pytest.mark.parametrize("name", ["grace", "wise", "memoir"])
def test_the_blocks_below_the_memory_run_once_per_edit_and_the_memory_is_the_same(
    name, micro_model_path, monkeypatch
):
    """An edit trains on one batch for ``n_iter`` steps while nothing below the hooked layer
    changes, so those blocks run at its first step only (``lower_blocks.same_batch``); what the
    edit stores is bitwise what recomputing them every step stores."""
    from editbench.core.method import METHODS
    from editbench.methods import lower_blocks

    def edit(replay: bool) -> tuple[dict, int]:
        ctx = _context(micro_model_path)
        cls = METHODS[name]
        settings = {"n_iter": 4, **({"n_templates": 2} if name != "grace" else {})}
        method = cls(cls.Config(**settings), ctx)
        method.prepare()
        assert method.layer_index() > 0  # there are blocks below it
        calls, inside = [], []
        first = ctx.model.get_submodule(ctx.layout.mlp_out_name(0))
        first.register_forward_hook(lambda *_: calls.append(1))
        # the memory layer's attention runs before the hooked projection: replayed too
        block = ctx.model.get_submodule(ctx.layout.block_name(method.layer_index()))
        attention = next(m for name, m in block.named_children() if "attn" in name)
        # a module inside it (a replayed module's own hooks still run on its replayed output)
        next(attention.children()).register_forward_hook(lambda *_: inside.append(1))
        if not replay:
            monkeypatch.setattr(lower_blocks.LowerBlocks, "same_batch",
                                lambda self, forward: forward())
        method.apply(RECORDS)
        monkeypatch.undo()
        return method.state_dict(), len(calls), len(inside)

    recomputed, recomputed_calls, recomputed_inside = edit(False)
    replayed, replayed_calls, replayed_inside = edit(True)
    assert recomputed_calls - replayed_calls == len(RECORDS) * (4 - 1)
    assert recomputed_inside - replayed_inside == len(RECORDS) * (4 - 1)
    assert recomputed.keys() == replayed.keys()
    for key, value in recomputed.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, replayed[key]), key
        else:
            assert value == replayed[key], key


def test_wise_edits_call_the_blocks_directly_and_train_as_the_models_forward_does(
        micro_llama, monkeypatch):
    """WISE's hooks on the model copy each call's attention mask for the scores; while an edit
    trains, the scores read the edit batch's own mask, so the hooks are declared idle and the
    training passes call the blocks from the hooked layer up directly (``upper_blocks.py``): one
    model forward per edit instead of one per step, and bitwise the same memory, thresholds and
    routing as the model's forward gives (the rows are padded: the mask matters)."""
    from editbench.methods import upper_blocks

    def edit(direct: bool):
        ctx, method = _wise(micro_llama, n_iter=6)
        if not direct:
            monkeypatch.setattr(upper_blocks.UpperBlocks, "path", lambda self, batch: None)
        passes, forward = [], ctx.model.forward
        ctx.model.forward = lambda *a, **k: (passes.append(1), forward(*a, **k))[1]
        method.apply(RECORDS[:2])
        monkeypatch.undo()
        lengths = {len(ctx.encoder.encode(t.format(RECORDS[0].prompt), RECORDS[0].target_new).ids)
                   for t in method.templates}
        return method.side.clone(), method.shard_min, len(passes), lengths

    recomputed, recomputed_min, recomputed_passes, lengths = edit(False)
    direct, direct_min, direct_passes, _ = edit(True)
    assert len(lengths) > 1  # rows of several lengths: padded, so the scores' mask matters
    assert recomputed_passes == 2 * 6
    assert direct_passes == 2  # each edit's recording pass only
    assert torch.equal(direct, recomputed) and direct_min == recomputed_min
