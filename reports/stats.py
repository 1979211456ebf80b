"""Confidence intervals and winners, the statistics behind every leaderboard cell.

A mean over a few hundred edits is a sample, not a fact: two methods whose 95% intervals overlap
are not told apart by this run, so the leaderboard shows them as tied rather than crowning the one
whose mean happens to be higher. Intervals are percentile bootstraps (Efron & Tibshirani 1993,
ch. 13) over the unit that was actually sampled: edits for scores, edit batches for time, and seeds
then edits where runs differ only by seed (a two-level bootstrap, so seed variance is included).

Every resample is seeded from the cell's own key, so a cell's interval does not change when other
stores are loaded beside it, and the same store always renders the same page.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

LEVEL = 0.95
N_BOOT = 2000
#: Single measurements (peak memory, one batch's time) have no interval; values this close
#: (relative) count as tied, since allocator and RSS noise is about this large.
POINT_TOLERANCE = 0.02


@dataclass(frozen=True)
class Interval:
    """A mean and its bootstrap interval; ``low``/``high`` are None where there is nothing to
    resample (a single measurement such as peak memory, or a single edit)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    def bounds(self) -> tuple[float, float]:
        """The interval, or for a single measurement the band of ``POINT_TOLERANCE`` around it."""
        if self.low is None or self.high is None:
            slack = POINT_TOLERANCE * abs(self.mean)
            return self.mean - slack, self.mean + slack
        return self.low, self.high

    def overlaps(self, other: Interval) -> bool:
        (low, high), (other_low, other_high) = self.bounds(), other.bounds()
        return low <= other_high and other_low <= high


def cell_rng(seed: int, *key: object) -> np.random.Generator:
    """A generator seeded by the global seed and the cell's identity (not by its place in a
    loop)."""
    return np.random.default_rng([seed, zlib.crc32("\x1f".join(map(str, key)).encode())])


def bootstrap_mean(values: Sequence[float], rng: np.random.Generator, n_boot: int = N_BOOT,
                   level: float = LEVEL) -> Interval:
    """Mean of ``values`` with a percentile bootstrap interval over them."""
    return bootstrap_pooled([values], rng, n_boot, level)


def resampled_sums(a: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """The sums of ``n`` resamples of ``a`` (``a.size`` draws with replacement each).

    Most per-edit scores are verdicts (0 or 1). The number of ones in a resample of a 0/1 array
    with ``k`` ones is Binomial(``a.size``, ``k / a.size``): the same distribution as drawing
    indices, in one draw per resample instead of ``a.size``, which made the bootstrap most of a
    report's time (issue 34). Other arrays draw indices."""
    if ((a == 0) | (a == 1)).all():
        return rng.binomial(a.size, np.count_nonzero(a) / a.size, size=n).astype(float)
    return a[rng.integers(0, a.size, size=(n, a.size))].sum(axis=1)


def bootstrap_pooled(groups: Sequence[Sequence[float]], rng: np.random.Generator,
                     n_boot: int = N_BOOT, level: float = LEVEL) -> Interval:
    """Mean over the edits of several runs (seeds) with a stratified bootstrap: edits are resampled
    within their own run, so every resample keeps each seed's share of the pool."""
    arrays = [np.asarray(g, dtype=float) for g in groups]
    arrays = [a[np.isfinite(a)] for a in arrays]
    arrays = [a for a in arrays if a.size]
    total = sum(a.size for a in arrays)
    if total == 0:
        raise ValueError("bootstrap needs at least one finite value")
    mean = float(sum(a.sum() for a in arrays) / total)
    if total == 1:
        return Interval(mean, None, None, 1)
    sums = np.zeros(n_boot)
    for a in arrays:
        sums += resampled_sums(a, rng, n_boot)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(sums / total, [tail, 100 - tail])
    return Interval(mean, float(low), float(high), int(total))


def bootstrap_many(cells: Sequence[tuple[Sequence[Sequence[float]], np.random.Generator]]
                   ) -> list[Interval]:
    """:func:`bootstrap_seeds` of every (groups, generator) cell, on a thread per core (up to
    four): numpy's generators and sums run outside the GIL, and each cell has its own generator,
    so the intervals are those of one call after another (a board's two thousand cells were a third
    of ``editbench report --html``, issue 34)."""
    if len(cells) < 64:
        return [bootstrap_seeds(groups, rng) for groups, rng in cells]
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                         else os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda cell: bootstrap_seeds(*cell), cells))


def bootstrap_seeds(groups: Sequence[Sequence[float]], rng: np.random.Generator,
                    n_boot: int = N_BOOT, level: float = LEVEL) -> Interval:
    """Mean over the edits of several runs that differ only by seed, with a two-level bootstrap:
    each resample draws the seeds with replacement, then the edits of every drawn seed with
    replacement (a seed drawn twice gets two independent draws of its edits). The interval then
    holds the variance between seeds as well as between edits: a trained editor's score moves
    with its training seed by up to 10 points at 100 edits (shared NOTES), which a resample of edits
    alone would hide. One seed: the same as :func:`bootstrap_mean`. The mean is the pooled mean."""
    arrays = [np.asarray(g, dtype=float) for g in groups]
    arrays = [a[np.isfinite(a)] for a in arrays]
    arrays = [a for a in arrays if a.size]
    if len(arrays) < 2:
        return bootstrap_pooled(groups, rng, n_boot, level)
    total = sum(a.size for a in arrays)
    mean = float(sum(a.sum() for a in arrays) / total)
    sums, counts = np.zeros(n_boot), np.zeros(n_boot)
    drawn = rng.integers(0, len(arrays), size=(n_boot, len(arrays)))
    for slot in range(len(arrays)):
        for index, a in enumerate(arrays):
            rows = np.flatnonzero(drawn[:, slot] == index)
            if rows.size:
                sums[rows] += resampled_sums(a, rng, rows.size)
                counts[rows] += a.size
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(sums / counts, [tail, 100 - tail])
    return Interval(mean, float(low), float(high), int(total))


def bootstrap_ratio(numerators: Sequence[float], denominators: Sequence[float],
                    rng: np.random.Generator, n_boot: int = N_BOOT,
                    level: float = LEVEL) -> Interval:
    """sum(num)/sum(den) with an interval from resampling (num, den) pairs together: seconds per
    edit from per-batch seconds and batch sizes, where batches may differ in size."""
    num = np.asarray(numerators, dtype=float)
    den = np.asarray(denominators, dtype=float)
    if num.size == 0 or num.size != den.size or den.sum() <= 0:
        raise ValueError("bootstrap_ratio needs matching, non-empty numerators and positive "
                         "denominators")
    ratio = float(num.sum() / den.sum())
    if num.size == 1:
        return Interval(ratio, None, None, 1)
    idx = rng.integers(0, num.size, size=(n_boot, num.size))
    ratios = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return Interval(ratio, float(low), float(high), int(num.size))


def wilson(rate: float, n: int, level: float = LEVEL) -> Interval:
    """A proportion's Wilson score interval (Wilson 1927). Capability probes are stored as an
    accuracy over ``n`` questions, not per question, so there is nothing to bootstrap; for a
    proportion the two intervals agree closely, and Wilson's stays inside [0, 1]."""
    if n < 1:
        raise ValueError("wilson needs at least one question")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    denominator = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denominator
    return Interval(float(rate), max(0.0, centre - half), min(1.0, centre + half), int(n))


def rank_marks(intervals: Sequence[Interval | None], higher_is_better: bool) -> list[str]:
    """``"best"`` for a clear winner, ``"tie"`` for every entry whose interval overlaps the
    leader's (the leader included, since it did not win), ``""`` otherwise. Nothing is marked when
    fewer than two entries have a value: a one-horse race has no winner."""
    present = [i for i, iv in enumerate(intervals) if iv is not None and math.isfinite(iv.mean)]
    marks = [""] * len(intervals)
    if len(present) < 2:
        return marks
    sign = 1 if higher_is_better else -1
    leader = max(present, key=lambda i: sign * intervals[i].mean)
    tied = [i for i in present if i != leader and intervals[i].overlaps(intervals[leader])]
    if not tied:
        marks[leader] = "best"
    else:
        for i in (leader, *tied):
            marks[i] = "tie"
    return marks


def bootstrap_difference(a: Sequence[float], b: Sequence[float], rng: np.random.Generator,
                         paired: bool, n_boot: int = N_BOOT, level: float = LEVEL) -> Interval:
    """mean(b) − mean(a) with a percentile bootstrap interval. ``paired``: ``a[i]`` and ``b[i]``
    are one edit scored on two sides, resampled together, so what the edits share (an easy or
    a hard edit) cancels; otherwise each side is resampled by itself. ``editbench compare``."""
    left, right = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if paired:
        if left.size != right.size:
            raise ValueError("bootstrap_difference: paired sides need as many values each")
        keep = np.isfinite(left) & np.isfinite(right)
        left, right = left[keep], right[keep]
    else:
        left, right = left[np.isfinite(left)], right[np.isfinite(right)]
    if left.size == 0 or right.size == 0:
        raise ValueError("bootstrap_difference needs at least one finite value a side")
    diff = float(right.mean() - left.mean())
    if paired:
        if left.size == 1:
            return Interval(diff, None, None, 1)
        idx = rng.integers(0, left.size, size=(n_boot, left.size))
        draws = (right - left)[idx].mean(axis=1)
    else:
        if left.size == 1 and right.size == 1:
            return Interval(diff, None, None, 1)
        draws = (right[rng.integers(0, right.size, size=(n_boot, right.size))].mean(axis=1)
                 - left[rng.integers(0, left.size, size=(n_boot, left.size))].mean(axis=1))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(diff, float(low), float(high), int(min(left.size, right.size)))
