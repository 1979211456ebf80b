"""The edit schedule: the checkpoint ladder, the batches between checkpoints, the evaluation sample.

All of it depends only on the run's options and seed, never on the method, so every method sees
the same edits in the same batches and is scored on the same records.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def default_ladder(edits: int, batch_size: int) -> tuple[int, ...]:
    """A 1-2-5 geometric ladder from one batch up to ``edits`` (always included)."""
    ladder: list[int] = []
    scale = 1
    while scale <= edits:
        for step in (1, 2, 5):
            value = step * scale
            if batch_size <= value < edits:
                ladder.append(value)
        scale *= 10
    return tuple(sorted(set(ladder))) + (edits,)


def checkpoint_ladder(chosen: Sequence[int], edits: int, batch_size: int,
                      option: str = "--checkpoints") -> tuple[int, ...]:
    """The edit counts at which a run is scored: ``chosen`` (``--checkpoints``, or the setting
    ``option`` names), always ending at ``edits``; none chosen: the 1-2-5 ladder."""
    if not chosen:
        return default_ladder(edits, batch_size)
    values = sorted(set(chosen))
    text = ",".join(map(str, chosen))
    if values[0] < 1:
        raise ValueError(f"{option} {text!r}: edit counts must be positive")
    if values[-1] > edits:
        raise ValueError(f"{option} {text!r}: {values[-1]} is beyond --edits {edits}")
    if values[-1] != edits:
        values.append(edits)
    return tuple(values)


def batch_bounds(edits: int, batch_size: int, checkpoints: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive [start, end) batches of at most ``batch_size`` that never cross a checkpoint, so
    a checkpoint always falls between two batches (``--checkpoints 10`` with ``--batch-size 20``
    makes the first batch 10 edits long). ``batch_size`` is at least 1 (the run's settings check
    it)."""
    batches = []
    start = 0
    for stop in checkpoints:
        while start < stop:
            end = min(start + batch_size, stop)
            batches.append((start, end))
            start = end
    return batches


def eval_positions(n_edits: int, sample: int | None, seed: int, strata: int = 10) -> list[int]:
    """Which of the first ``n_edits`` edits to evaluate at a checkpoint.

    All of them, or a seeded sample stratified by position (equal shares from each tenth of the
    stream) that always holds the first and the last edit, so retention curves see early and late
    edits alike. ``sample`` is at least 2 (the run's settings check it).
    """
    if sample is None or sample >= n_edits:
        return list(range(n_edits))
    rng = random.Random(f"{seed}-eval-{n_edits}")
    chosen = {0, n_edits - 1}
    strata = min(strata, sample)
    bounds = [round(i * n_edits / strata) for i in range(strata + 1)]
    per_stratum = [sample // strata + (1 if i < sample % strata else 0) for i in range(strata)]
    for (low, high), want in zip(zip(bounds, bounds[1:]), per_stratum):
        pool = [p for p in range(low, high) if p not in chosen]
        have = sum(low <= p < high for p in chosen)
        chosen.update(rng.sample(pool, max(0, min(len(pool), want - have))))
    return sorted(chosen)
