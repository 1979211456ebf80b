import math

import pytest

from editbench.core.metrics import TfIdf, mean_token_prob, ngram_entropy, prefers
from editbench.core.records import PairScore


def _score(logprob, n):
    return PairScore(0.0, logprob, n, ())


def test_probabilities_are_per_token_means():
    assert mean_token_prob(_score(2 * math.log(0.5), 2)) == pytest.approx(0.5)
    success, magnitude = prefers(_score(math.log(0.6), 1), _score(2 * math.log(0.2), 2))
    assert success == 1.0 and magnitude == pytest.approx(0.4)
    success, magnitude = prefers(_score(math.log(0.1), 1), _score(math.log(0.3), 1))
    assert success == 0.0 and magnitude == pytest.approx(-0.2)


def test_ngram_entropy_by_hand():
    # "a b a b": bigrams (a,b) x2, (b,a) x1 -> H2; trigrams (a,b,a), (b,a,b) -> H3 = 1 bit
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    assert ngram_entropy("x x x x x x") == 0.0  # a loop has no entropy
    assert ngram_entropy("one two three four five") > ngram_entropy("one two one two one")


def test_tfidf_cosine_by_hand():
    space = TfIdf(["red apple", "green apple", "blue sky"])
    same = space.cosine(space.vector(["red apple"]), space.vector(["red apple"]))
    assert same == pytest.approx(1.0)
    assert space.cosine(space.vector(["red apple"]), space.vector(["blue sky"])) == 0.0
    partly = space.cosine(space.vector(["red apple"]), space.vector(["green apple"]))
    idf_apple, idf_red = math.log(4 / 3) + 1, math.log(4 / 2) + 1
    assert partly == pytest.approx(idf_apple**2 / (idf_apple**2 + idf_red**2))
