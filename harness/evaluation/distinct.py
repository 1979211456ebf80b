"""Each distinct pair scored once (issue 34).

A checkpoint's edits share prompts: in the pocket world many edits name the same neighbours, so
at 200 edits 1,906 scored pairs hold 1,320 distinct ones. A pair's score depends on the pair and
the model alone, so the probe reads each once and every edit that asks for it gets its result. The
batches the probe packs then hold other rows than before, which moves a score by float rounding at
most (a near tie of two tokens may break the other way), as any change of batch does.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

Item = TypeVar("Item", bound=Hashable)
Result = TypeVar("Result")


def once_each(call: Callable[[list[Item]], Sequence[Result]], items: Sequence[Item]
              ) -> list[Result]:
    """``call`` on the distinct ``items`` (in first-seen order), its results given back for every
    item in order."""
    distinct = list(dict.fromkeys(items))
    results = dict(zip(distinct, call(distinct), strict=True))
    return [results[item] for item in items]
