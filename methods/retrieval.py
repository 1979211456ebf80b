"""A retrieval (in-context) baseline: the model is never changed; edits are remembered as text.

Every edit's ``(prompt, target_new)`` is stored. At scoring time each prompt is matched against the
stored edit prompts with BM25 (Robertson and Zaragoza 2009, with Lucene's ``BM25Similarity``
defaults k1 = 1.2, b = 0.75 and idf = log(1 + (N - df + 0.5) / (df + 0.5))), and the best ``top_k``
hits are put in front of it as ``New fact: {prompt} {target}.`` lines (the "New Fact:" wording of
EasyEdit's IKE). This is the baseline WikiBigEdit (Thede et al., ICML 2025) finds beats the editors
at scale; its release retrieves the top 2 edits by question embedding (``rag_main.py``), editbench
uses BM25 over the same questions because it runs offline and is exact to test. Unlike the release,
a prompt that shares no word (outside a short stop list) with any stored edit prompt, or scores at
most ``min_score`` against all of them, is scored unchanged: "no relevant edit" is then a property,
not a hope. The model's weights are untouched, so every scoring backend (HF and vLLM) runs it.

Dense retrieval, as the release runs it: ``--param retrieval.encoder=NAME`` embeds the edit
prompts with that encoder and searches them by cosine in a nearest-neighbour index (``_dense.py``:
faiss's HNSW with the ``retrieval`` extra, else exact); ``retrieval@wikibigedit`` takes the
release's encoder (all-mpnet-base-v2), top 2, its ``Q: {prompt} A: {target}`` context and its
rule of always retrieving (no relevance threshold). Release lines: docs/memory-and-retrieval.md.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..core.costs import MethodCost, ModelShape, PhaseCost, RunShape, weights_bytes
from ..core.method import METHODS, EditMethod, MethodConfig, state_text, text_state
from ..core.records import EditRecord
from ._dense import TextEncoder, VectorIndex, faiss_installed, make_index

#: words too common to make an edit relevant (a prompt sharing only these retrieves nothing)
STOP_WORDS = frozenset(
    "a an and are as at be by for from has have he her his in is it its of on or she that the "
    "their they this to was were what when where which who whom whose why with".split())


def terms(text: str) -> list[str]:
    """Lower-cased word tokens, stop words removed."""
    return [w for w in re.findall(r"\w+", text.lower()) if w not in STOP_WORDS]


class BM25:
    """An incremental BM25 index over short documents (the edit prompts)."""

    def __init__(self, k1: float, b: float) -> None:
        self.k1, self.b = k1, b
        self.docs: list[Counter[str]] = []
        self.lengths: list[int] = []
        self.df: Counter[str] = Counter()
        self.postings: dict[str, list[int]] = {}

    def add(self, text: str) -> None:
        words = Counter(terms(text))
        index = len(self.docs)
        self.docs.append(words)
        self.lengths.append(sum(words.values()))
        for word in words:
            self.df[word] += 1
            self.postings.setdefault(word, []).append(index)

    def scores(self, query: str) -> dict[int, float]:
        """BM25 score of every document sharing a query term (the others score 0)."""
        n = len(self.docs)
        mean_length = sum(self.lengths) / n if n else 0.0
        result: dict[int, float] = {}
        # each query term once, in the query's order: a set's order follows the per-process
        # string hash (PYTHONHASHSEED), and the float sum below depends on the order, so tied
        # documents swapped places between two runs of one command (seen at 5,000 edits)
        for word in dict.fromkeys(terms(query)):
            idf = math.log(1 + (n - self.df[word] + 0.5) / (self.df[word] + 0.5))
            for index in self.postings.get(word, ()):
                tf = self.docs[index][word]
                norm = self.k1 * (1 - self.b + self.b * self.lengths[index] / (mean_length or 1.0))
                result[index] = result.get(index, 0.0) + idf * tf * (self.k1 + 1) / (tf + norm)
        return result


@dataclass(frozen=True)
class RetrievalConfig(MethodConfig):
    # WikiBigEdit's RAG experiments retrieve two facts (hydra/experiments/rag_llama3.yaml)
    top_k: int = 2
    min_score: float = 0.0  # a hit must score above this; 0: any shared word (BM25)
    k1: float = 1.2
    b: float = 0.75
    encoder: str = ""  # a sentence encoder's folder or hub name; "": BM25
    encoder_backend: str = "auto"  # auto (sentence-transformers where installed), transformers
    max_length: int = 384  # encoder tokens (all-mpnet-base-v2's max_seq_length)
    encoder_batch: int = 64
    index: str = "auto"  # hnsw (faiss), exact, auto: hnsw where faiss is installed
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    context: str = "new-fact"  # new-fact: "New fact: {p} {t}." lines; qa: "Q: {p} A: {t}" (WBE)
    always: bool = False  # True: every prompt gets its top_k, min_score ignored (WikiBigEdit)

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")
        if self.min_score < 0:
            raise ValueError(f"min_score must be 0 or more, got {self.min_score}")
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise ValueError(
                f"k1 must be 0 or more and b within [0, 1], got k1={self.k1}, b={self.b}"
            )
        for field, value, allowed in (
                ("encoder_backend", self.encoder_backend,
                 ("auto", "sentence-transformers", "transformers")),
                ("index", self.index, ("auto", "hnsw", "exact")),
                ("context", self.context, ("new-fact", "qa"))):
            if value not in allowed:
                raise ValueError(f"{field} must be one of {', '.join(allowed)}, got {value!r}")
        if min(self.max_length, self.encoder_batch, self.hnsw_m, self.ef_construction,
               self.ef_search) < 1:
            raise ValueError("max_length, encoder_batch, hnsw_m, ef_construction and ef_search "
                             "must be at least 1")


#: WikiBigEdit's RAG: ``rag_main.py:37`` (encoder), ``hydra/experiments/rag_llama3.yaml:19-25``
#: (top 2, an approximate index), ``rag_main.py:62,166,245-247`` (context), no threshold
WIKIBIGEDIT = {"encoder": "sentence-transformers/all-mpnet-base-v2", "top_k": 2, "index": "hnsw",
               "context": "qa", "always": True}


@METHODS.register("retrieval")
class Retrieval(EditMethod):
    name = "retrieval"
    description = (
        "no weight change: BM25 (or a dense encoder, retrieval.encoder) retrieves stored edits "
        "and prepends them to the prompt"
    )
    Config = RetrievalConfig
    rewrites_prompts = True
    presets = {"wikibigedit": WIKIBIGEDIT}

    def cost(self, shape: ModelShape, run: RunShape) -> MethodCost:
        """No edit touches the model; every scored prompt carries up to ``top_k`` retrieved facts,
        so evaluation reads about ``1 + top_k`` times the tokens (``evaluation_tokens``)."""
        return MethodCost(
            self.name,
            weights_bytes(shape),
            (PhaseCost("editing", 0, 0.0, "stores the edits"),),
            evaluation_tokens=1 + self.config.top_k,
        )

    def __init__(self, config, context) -> None:
        super().__init__(config, context)
        self.facts: list[tuple[str, str]] = []
        self.index = BM25(config.k1, config.b)
        self.encoder: TextEncoder | None = None
        self.vectors: VectorIndex | None = None
        self.segments: list[int] = []  # how many vectors each add held (replayed on a resume)
        self.queries: dict[str, np.ndarray] = {}  # scored prompts' vectors, encoded once

    def requirements(self) -> list[str]:
        if self.config.encoder and self.config.index == "hnsw" and not faiss_installed():
            return ['retrieval.index=hnsw searches with faiss, which is not installed: pip install '
                    '"editbench[retrieval]" (or --param retrieval.index=exact)']
        return []

    def prepare(self) -> None:
        config: RetrievalConfig = self.config  # type: ignore[assignment]
        if config.encoder and self.encoder is None:
            self.encoder = TextEncoder(config.encoder, self.ctx.device, config.max_length,
                                       config.encoder_batch, config.encoder_backend)

    def edited_parameters(self) -> list[str]:
        return []

    def apply(self, batch: Sequence[EditRecord]) -> None:
        facts = [(record.prompt, record.target_new) for record in batch]
        vectors = self.encoder.encode([p for p, _ in facts]) if self.encoder else None
        self._remember(facts, vectors)

    def _remember(self, facts: list[tuple[str, str]], vectors: np.ndarray | None) -> None:
        self.facts.extend(facts)
        if vectors is None:
            for prompt, _ in facts:
                self.index.add(prompt)
            return
        if self.vectors is None:
            config: RetrievalConfig = self.config  # type: ignore[assignment]
            self.vectors = make_index(config.index, vectors.shape[1], config.hnsw_m,
                                      config.ef_construction, config.ef_search)
        self.vectors.add(vectors)
        self.segments.append(len(vectors))

    def _hits(self, prompt: str) -> list[tuple[float, int]]:
        config: RetrievalConfig = self.config  # type: ignore[assignment]
        if self.encoder is None:
            hits = list((score, i) for i, score in self.index.scores(prompt).items())
            hits.sort(key=lambda hit: (-hit[0], -hit[1]))
            hits = hits[: config.top_k] if config.always else hits
        else:
            hits = self.vectors.search(self.queries[prompt], config.top_k) if self.vectors else []
        if not config.always:
            hits = [hit for hit in hits if hit[0] > config.min_score]
        return hits[: config.top_k]

    def retrieve(self, prompt: str) -> list[tuple[str, str]]:
        """The stored edits most relevant to ``prompt``, best first (ties: the later edit first, so
        a re-edited fact shows its newest target first)."""
        self._encode_queries([prompt])
        return [self.facts[i] for _, i in self._hits(prompt)]

    def _encode_queries(self, prompts: Sequence[str]) -> None:
        if self.encoder is None:
            return
        new = list(dict.fromkeys(p for p in prompts if p not in self.queries))
        if len(self.queries) + len(new) > 100_000:
            self.queries.clear()
        if new:
            self.queries.update(zip(new, self.encoder.encode(new)))

    def scoring_prompts(self, prompts: Sequence[str]) -> list[str]:
        """Many prompts rewritten with one encoder pass over those not seen before. The probe
        wrapper (``core.probe.RewrittenPrompts``) calls :meth:`scoring_prompt` one prompt at a
        time, so there each prompt is encoded alone, once per run (``queries`` keeps them)."""
        self._encode_queries(prompts)
        return [self.scoring_prompt(p) for p in prompts]

    def scoring_prompt(self, prompt: str) -> str:
        facts = self.retrieve(prompt)
        if not facts:
            return prompt
        if self.config.context == "qa":
            return " ".join(f"Q: {p} A: {t}" for p, t in facts) + " " + prompt
        return "".join(f"New fact: {p} {t}.\n" for p, t in facts) + prompt

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"facts": text_state(self.facts)}
        if self.vectors is not None:
            state["vectors"] = torch.from_numpy(self.vectors.vectors.copy())
            state["segments"] = torch.tensor(self.segments, dtype=torch.int64)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """The stored texts, and the stored vectors added in the batches they were added in, so
        the approximate index is rebuilt as the same graph."""
        self.facts, self.index, self.vectors, self.segments = [], BM25(self.config.k1,
                                                                       self.config.b), None, []
        facts = [tuple(fact) for fact in state_text(state["facts"])]
        if "vectors" not in state:
            self._remember(facts, None)
            return
        vectors, start = state["vectors"].numpy(), 0
        for size in state["segments"].tolist():
            self._remember(facts[start:start + size], vectors[start:start + size])
            start += size
