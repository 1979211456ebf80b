"""Dense retrieval's two parts: a text encoder named by the user, and a nearest-neighbour index over
its unit vectors (inner product = cosine), approximate through faiss where it is installed, exact
through numpy where it is not.

The index is faiss's HNSW graph (Malkov and Yashunin 2018, ``IndexHNSWFlat``) rather than Annoy,
which WikiBigEdit's RAG experiments use (100 angular trees): faiss ships wheels for every platform,
is maintained (1.15 in 2026; Annoy's last release is 1.17.3, 2023), and its HNSW takes vectors
one batch at a time, as a lifelong run adds them, without rebuilding (Annoy's trees are frozen once
built, so the release rebuilds them at every evaluation). hnswlib has no wheel. Either index only
proposes candidates: both rank them by the exact inner product in float64, ties to the later edit,
so they return the same neighbours whenever the candidates hold the true ones (always, on sets
smaller than ``ef_search``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
from collections.abc import Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)

#: candidates the index proposes per hit asked for, before the exact ranking
CANDIDATES_PER_HIT = 4


def faiss_installed() -> bool:
    return importlib.util.find_spec("faiss") is not None


class TextEncoder:
    """Unit-length sentence vectors from a model folder or hub name. Through sentence-transformers
    where it is installed (the model's own pooling, as WikiBigEdit's ``SentenceTransformer``), else
    transformers' ``AutoModel`` with the mean over the non-padding tokens' last hidden states
    (all-mpnet-base-v2's own pooling). Never runs a repository's code; reads safetensors only."""

    def __init__(self, name: str, device: torch.device, max_length: int, batch: int,
                 backend: str = "auto") -> None:
        self.device, self.max_length, self.batch = device, max_length, batch
        self.sentence_transformer = None
        if backend == "sentence-transformers" or (
                backend == "auto" and importlib.util.find_spec("sentence_transformers")):
            from sentence_transformers import SentenceTransformer

            self.sentence_transformer = SentenceTransformer(
                name, device=str(device), trust_remote_code=False,
                model_kwargs={"use_safetensors": True})
            self.sentence_transformer.max_seq_length = max_length
            return
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=False)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model = AutoModel.from_pretrained(name, trust_remote_code=False,
                                               use_safetensors=True, dtype=torch.float32)
        self.model.to(device).eval()

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 rows of length 1."""
        if self.sentence_transformer is not None:
            vectors = self.sentence_transformer.encode(list(texts), batch_size=self.batch,
                                                       convert_to_numpy=True,
                                                       show_progress_bar=False)
            return _unit(np.asarray(vectors, dtype=np.float32))
        rows = []
        for start in range(0, len(texts), self.batch):
            tokens = self.tokenizer(list(texts[start:start + self.batch]), padding=True,
                                    truncation=True, max_length=self.max_length,
                                    return_tensors="pt").to(self.device)
            hidden = self.model(input_ids=tokens["input_ids"],
                                attention_mask=tokens["attention_mask"]).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            rows.append(((hidden * mask).sum(1) / mask.sum(1).clamp_min(1)).float().cpu())
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return _unit(torch.cat(rows).numpy())


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class VectorIndex:
    """The stored vectors, and a nearest-neighbour search over them by inner product."""

    kind = "exact"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._rows = np.zeros((0, dim), dtype=np.float32)  # capacity doubles: adds are amortised
        self.size = 0

    @property
    def vectors(self) -> np.ndarray:
        return self._rows[:self.size]

    def add(self, vectors: np.ndarray) -> None:
        needed = self.size + len(vectors)
        if needed > len(self._rows):
            grown = np.zeros((max(needed, 2 * len(self._rows), 1024), self.dim), np.float32)
            grown[:self.size] = self.vectors
            self._rows = grown
        self._rows[self.size:needed] = vectors
        self.size = needed

    def candidates(self, query: np.ndarray, n: int) -> np.ndarray:
        """The ids of (about) the ``n`` best rows; the exact index takes them from every score."""
        scores = self.vectors @ query
        if n >= len(scores):
            return np.arange(len(scores))
        return np.argpartition(-scores, n - 1)[:n]

    def search(self, query: np.ndarray, k: int) -> list[tuple[float, int]]:
        """The ``k`` best (score, id), best first: candidates ranked by the exact inner product in
        float64, ties to the higher id (the later edit)."""
        if not len(self.vectors):
            return []
        ids = self.candidates(query, min(len(self.vectors), CANDIDATES_PER_HIT * k))
        ids = ids[ids >= 0]
        exact = (self.vectors[ids].astype(np.float64) * query.astype(np.float64)).sum(1)
        ranked = sorted(zip(exact.tolist(), ids.tolist()), key=lambda hit: (-hit[0], -hit[1]))
        return ranked[:k]


class HNSWIndex(VectorIndex):
    """faiss's HNSW graph over the same vectors. Its insertion runs on one thread, so a graph built
    in the same batches is the same graph (the state replays them on a resume)."""

    kind = "hnsw"

    def __init__(self, dim: int, m: int, ef_construction: int, ef_search: int) -> None:
        import faiss

        super().__init__(dim)
        self.faiss = faiss
        self.graph = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        self.graph.hnsw.efConstruction = ef_construction
        self.graph.hnsw.efSearch = ef_search

    def add(self, vectors: np.ndarray) -> None:
        super().add(vectors)
        with _one_thread(self.faiss):
            self.graph.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def candidates(self, query: np.ndarray, n: int) -> np.ndarray:
        _, ids = self.graph.search(np.ascontiguousarray(query[None], dtype=np.float32), n)
        return ids[0]


@contextlib.contextmanager
def _one_thread(faiss):
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def make_index(kind: str, dim: int, m: int, ef_construction: int, ef_search: int) -> VectorIndex:
    """``hnsw`` (faiss, the ``retrieval`` extra), ``exact``, or ``auto``: hnsw where faiss is
    installed, else exact (logged)."""
    if kind == "auto":
        kind = "hnsw" if faiss_installed() else "exact"
        if kind == "exact":
            log.info("retrieval: faiss is not installed, so the index is exact (numpy); "
                     'pip install "editbench[retrieval]" for the approximate one')
    if kind == "hnsw":
        return HNSWIndex(dim, m, ef_construction, ef_search)
    return VectorIndex(dim)
