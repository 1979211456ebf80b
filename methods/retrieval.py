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
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..core.costs import MethodCost, ModelShape, PhaseCost, RunShape, weights_bytes
from ..core.method import METHODS, EditMethod, MethodConfig, state_text, text_state
from ..core.records import EditRecord

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
        for word in set(terms(query)):
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
    min_score: float = 0.0  # a hit must score above this; 0: any shared word counts
    k1: float = 1.2
    b: float = 0.75

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")
        if self.min_score < 0:
            raise ValueError(f"min_score must be 0 or more, got {self.min_score}")
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise ValueError(
                f"k1 must be 0 or more and b within [0, 1], got k1={self.k1}, b={self.b}"
            )


@METHODS.register("retrieval")
class Retrieval(EditMethod):
    name = "retrieval"
    description = (
        "no weight change: BM25 retrieves stored edits and prepends them as 'New fact: ...' lines"
    )
    Config = RetrievalConfig
    rewrites_prompts = True

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

    def edited_parameters(self) -> list[str]:
        return []

    def apply(self, batch: Sequence[EditRecord]) -> None:
        for record in batch:
            self._remember(record.prompt, record.target_new)

    def _remember(self, prompt: str, target: str) -> None:
        self.facts.append((prompt, target))
        self.index.add(prompt)

    def retrieve(self, prompt: str) -> list[tuple[str, str]]:
        """The stored edits most relevant to ``prompt``, best first (ties: the later edit first, so
        a re-edited fact shows its newest target first)."""
        config: RetrievalConfig = self.config  # type: ignore[assignment]
        hits = [
            (score, i) for i, score in self.index.scores(prompt).items() if score > config.min_score
        ]
        hits.sort(key=lambda hit: (-hit[0], -hit[1]))
        return [self.facts[i] for _, i in hits[: config.top_k]]

    def scoring_prompt(self, prompt: str) -> str:
        facts = self.retrieve(prompt)
        if not facts:
            return prompt
        return "".join(f"New fact: {p} {t}.\n" for p, t in facts) + prompt

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"facts": text_state(self.facts)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.facts, self.index = [], BM25(self.config.k1, self.config.b)
        for prompt, target in state_text(state["facts"]):
            self._remember(prompt, target)
