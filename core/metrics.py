"""Metric math shared by tasks: probability comparisons, n-gram entropy, TF-IDF similarity.

Each function is the plain formula; which records and prompts it is applied to is the task's choice.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from .records import PairScore

_WORD = re.compile(r"\w+|[^\w\s]")


def mean_token_prob(score: PairScore) -> float:
    """exp of the mean token log-probability: ROME/MEMIT's per-target probability."""
    return math.exp(score.logprob / max(score.n_tokens, 1))


def prefers(wanted: PairScore, other: PairScore) -> tuple[float, float]:
    """(success, magnitude): is ``wanted`` more probable than ``other``, and by how much
    (ROME/MEMIT's ES/EM, PS/PM and, with the roles swapped, NS/NM)."""
    p_wanted, p_other = mean_token_prob(wanted), mean_token_prob(other)
    return float(p_wanted > p_other), p_wanted - p_other


def words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens (ROME uses nltk.word_tokenize; this is close and
    dependency-free)."""
    return _WORD.findall(text.lower())


def ngram_entropy(text: str, ns: Sequence[int] = (2, 3),
                  weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """ROME's fluency: the weighted arithmetic mean of bi- and tri-gram entropies (bits) of a text.
    Repetitive text (a model stuck in a loop) scores low."""
    tokens = words(text)
    entropies = []
    for n, weight in zip(ns, weights, strict=True):
        counts = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        total = sum(counts.values())
        entropy = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        entropies.append(weight * entropy)
    return sum(entropies) / len(entropies)


#: scikit-learn's default ``token_pattern``, which ROME's TF-IDF uses (``dsets/tfidf_stats.py``):
#: lower-cased words of two or more word characters; punctuation and one-letter words are dropped
_TFIDF_TOKEN = re.compile(r"(?u)\b\w\w+\b")


def tfidf_tokens(text: str) -> list[str]:
    return _TFIDF_TOKEN.findall(text.lower())


class TfIdf:
    """A TF-IDF space as ROME's consistency metric uses one (scikit-learn's ``TfidfVectorizer`` with
    its defaults): raw counts times a smoothed idf ``ln((1 + n) / (1 + df)) + 1``, L2-normalised;
    words outside the vocabulary are ignored. Fitted on documents, or given a published vocabulary
    and idf (ROME's ``tfidf_vocab.json`` and ``idf.npy``, fitted on Wikipedia)."""

    def __init__(self, documents: Sequence[str] = (), idf: dict[str, float] | None = None) -> None:
        if idf is not None:
            self.idf = dict(idf)
            return
        df: Counter = Counter()
        for doc in documents:
            df.update(set(tfidf_tokens(doc)))
        n = len(documents)
        self.idf = {w: math.log((1 + n) / (1 + c)) + 1 for w, c in df.items()}

    def vector(self, texts: Sequence[str]) -> dict[str, float]:
        """The L2-normalised TF-IDF vector of ``texts`` joined into one document (as ROME joins the
        generated texts, and the reference texts, before comparing them)."""
        counts: Counter = Counter()
        for text in texts:
            counts.update(w for w in tfidf_tokens(text) if w in self.idf)
        vec = {w: c * self.idf[w] for w, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in vec.values()))
        return {w: v / norm for w, v in vec.items()} if norm else {}

    @staticmethod
    def cosine(a: dict[str, float], b: dict[str, float]) -> float:
        return sum(v * b.get(w, 0.0) for w, v in a.items())
