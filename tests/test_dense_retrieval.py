"""Dense retrieval (methods/retrieval.py with ``encoder``, methods/_dense.py) on a micro encoder
built from a config: an edit's own prompt retrieves that edit first, top-k is obeyed, the
approximate and the exact index agree on small sets, the release's context and always-retrieve
rule, and the state round trip rebuilds the same index."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from editbench.core.method import MethodRef
from editbench.core.models import ModelLayout, load_model
from editbench.core.records import EditRecord
from editbench.methods import EditContext
from editbench.methods._dense import HNSWIndex, VectorIndex, make_index
from editbench.methods.retrieval import Retrieval, RetrievalConfig

NAMES = ["Kalo Mirve", "Wensel Quitho", "Brajar Port", "Fengal Vale", "Tomi Rask", "Ulla Venn",
         "Orin Sato", "Pela Dunn", "Mara Lind", "Ivo Kess", "Sela Brun", "Dag Holm"]
RELATIONS = ["lives in", "was born in", "works for", "speaks"]
EDITS = [EditRecord(uid=f"{i}", prompt=f"{name} {relation}", subject=name, target_new=f"T{i}")
         for i, (name, relation) in enumerate((n, r) for n in NAMES for r in RELATIONS)]


def _method(scored_model, encoder_path, **settings) -> Retrieval:
    """Retrieval with a dense encoder, in the context of the model it would rewrite prompts for."""
    model, tokenizer = load_model(scored_model, torch.device("cpu"), torch.float32)
    ctx = EditContext(model=model, tokenizer=tokenizer, layout=ModelLayout.of(model),
                      device=torch.device("cpu"), cache_dir=encoder_path, task=None, seed=0,
                      generator=torch.Generator().manual_seed(0))
    settings = {**settings, "encoder": str(encoder_path), "encoder_backend": "transformers"}
    config = RetrievalConfig(**settings)
    method = Retrieval(config, ctx)
    method.prepare()
    return method


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, world_tokenizer):
    """A two-layer MPNet (all-mpnet-base-v2's architecture) built from a config and saved with
    the micro world's tokenizer, loaded by name as a user's encoder would be."""
    import transformers as tf

    folder = tmp_path_factory.mktemp("micro-mpnet")
    torch.manual_seed(0)
    config = tf.MPNetConfig(vocab_size=len(world_tokenizer), hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=520, pad_token_id=world_tokenizer.pad_token_id)
    tf.MPNetModel(config).save_pretrained(folder, safe_serialization=True)
    world_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def make(encoder, micro_llama):
    return lambda **settings: _method(micro_llama, encoder, **settings)


def _unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("index", ["exact", "hnsw"])
def test_an_edits_own_prompt_retrieves_that_edit_first(make, index):
    pytest.importorskip("faiss") if index == "hnsw" else None
    method = make(index=index, top_k=3, always=True)
    for start in range(0, len(EDITS), 7):  # lifelong: several adds
        method.apply(EDITS[start:start + 7])
    assert method.vectors.kind == index
    for record in EDITS:
        facts = method.retrieve(record.prompt)
        assert facts[0] == (record.prompt, record.target_new)
        assert len(facts) == 3


def test_top_k_is_obeyed_and_a_small_memory_gives_all_it_has(make, encoder):
    method = make(index="exact", top_k=2, always=True)
    assert method.scoring_prompt("Kalo Mirve lives in") == "Kalo Mirve lives in"
    method.apply(EDITS[:1])
    assert len(method.retrieve("anything at all")) == 1
    method.apply(EDITS[1:10])
    for k in (1, 2, 5):
        method.config = RetrievalConfig(encoder=str(encoder), index="exact", top_k=k, always=True)
        assert len(method.retrieve("Dag Holm speaks")) == k


def test_the_release_context_always_retrieves(make):
    release = MethodRef.parse("retrieval@wikibigedit").config({}).__dict__
    method = make(**{**release, "index": "exact"})
    method.apply(EDITS[:3])
    shown = method.scoring_prompt(EDITS[1].prompt)
    first, second = method.retrieve(EDITS[1].prompt)
    assert shown == f"Q: {first[0]} A: {first[1]} Q: {second[0]} A: {second[1]} {EDITS[1].prompt}"
    assert first == (EDITS[1].prompt, EDITS[1].target_new)
    # no relevance rule: even a prompt that shares nothing with any edit gets two facts
    assert method.scoring_prompt("zzz").startswith("Q: ")


def test_the_wikibigedit_preset_holds_the_releases_settings():
    config = MethodRef.parse("retrieval@wikibigedit").config({})
    assert config.encoder == "sentence-transformers/all-mpnet-base-v2"
    assert (config.top_k, config.context, config.always, config.index) == (2, "qa", True, "hnsw")
    assert MethodRef.parse("retrieval").config({}).encoder == ""  # BM25 stays the default


def test_batched_rewrites_equal_one_at_a_time(make):
    method = make(index="exact", top_k=2)
    method.apply(EDITS[:20])
    prompts = [r.prompt for r in EDITS[10:30]] + ["Kalo Mirve lives in"]
    assert method.scoring_prompts(prompts) == [method.scoring_prompt(p) for p in prompts]


def test_a_state_round_trip_rebuilds_the_same_index(make):
    pytest.importorskip("faiss")
    method = make(index="hnsw", top_k=3)
    for start in range(0, len(EDITS), 5):
        method.apply(EDITS[start:start + 5])
    state = method.state_dict()
    fresh = make(index="hnsw", top_k=3)
    fresh.load_state_dict(state)
    assert fresh.segments == method.segments and fresh.facts == method.facts
    for record in EDITS:
        assert fresh.scoring_prompt(record.prompt) == method.scoring_prompt(record.prompt)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_approximate_and_the_exact_index_give_the_same_neighbours_on_small_sets(seed):
    pytest.importorskip("faiss")
    rows = _unit_rows(200, 16, seed)
    exact, approximate = VectorIndex(16), HNSWIndex(16, m=32, ef_construction=200, ef_search=128)
    for start in range(0, 200, 37):
        exact.add(rows[start:start + 37])
        approximate.add(rows[start:start + 37])
    for query in _unit_rows(50, 16, seed + 100):
        for k in (1, 2, 5):
            assert approximate.search(query, k) == exact.search(query, k)


def test_ties_go_to_the_later_edit():
    index = VectorIndex(4)
    row = _unit_rows(1, 4, 0)
    index.add(np.concatenate([row, _unit_rows(3, 4, 1), row]))
    assert [i for _, i in index.search(row[0], 2)] == [4, 0]


def test_without_faiss_auto_is_exact_and_hnsw_names_the_extra(make, monkeypatch):
    from editbench.methods import _dense

    monkeypatch.setattr(_dense, "faiss_installed", lambda: False)
    monkeypatch.setattr("editbench.methods.retrieval.faiss_installed", lambda: False)
    assert make_index("auto", 8, 32, 200, 128).kind == "exact"
    method = make(index="hnsw")
    (line,) = method.requirements()
    assert 'pip install "editbench[retrieval]"' in line and "\n" not in line
    assert make(index="auto").requirements() == []


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="index"):
        RetrievalConfig(index="annoy")
    with pytest.raises(ValueError, match="context"):
        RetrievalConfig(context="chat")


def test_sentence_transformers_and_plain_mean_pooling_give_the_same_vectors(encoder):
    """A folder without sentence-transformers' own modules gets its mean pooling there: the two
    backends must agree, so the fallback computes what the release's loader computes."""
    pytest.importorskip("sentence_transformers")
    from editbench.methods._dense import TextEncoder

    texts = [r.prompt for r in EDITS[:9]]
    plain = TextEncoder(str(encoder), torch.device("cpu"), 384, 4, "transformers").encode(texts)
    through = TextEncoder(str(encoder), torch.device("cpu"), 384, 4,
                          "sentence-transformers").encode(texts)
    np.testing.assert_allclose(through, plain, atol=1e-5)
