"""Value types of the commands whose options are not a run's settings (bench, plan, selfcheck):
each refuses an empty, zero, negative, non-finite or malformed value in one line naming the
option, before anything runs. The run's own settings are checked where they are declared
(``harness/plan/settings.py``)."""

from __future__ import annotations

import math

import click


class Counts(click.ParamType):
    """Comma-separated integers of at least ``at_least`` (``100,1000``), as a sorted tuple;
    ``allow_empty`` lets an empty text mean "none" (``selfcheck --bench-sizes ''`` skips the
    bench)."""

    name = "N,N,..."

    def __init__(self, at_least: int = 1, allow_empty: bool = False) -> None:
        self.at_least, self.allow_empty = at_least, allow_empty

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = [part.strip() for part in str(value).split(",")]
        if parts == [""] and self.allow_empty:
            return ()
        try:
            numbers = tuple(sorted(int(part) for part in parts))
        except ValueError:
            self.fail(f"{value!r}: expected comma-separated integers such as 100,1000", param, ctx)
        if any(n < self.at_least for n in numbers):
            self.fail(f"{value!r}: each must be at least {self.at_least}", param, ctx)
        return numbers


class Names(click.ParamType):
    """Comma-separated names (``ft-m,memit``) as a tuple; an empty item or a repeated one is
    refused, so ``--methods ''`` never silently means every method."""

    name = "A,B"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        names = tuple(part.strip() for part in str(value).split(","))
        if not all(names):
            self.fail(f"{value!r}: expected comma-separated names with none empty", param, ctx)
        if len(set(names)) != len(names):
            self.fail(f"{value!r} names one twice", param, ctx)
        return names


class Positive(click.ParamType):
    """A finite number above zero (a memory in GiB, a speed in TFLOP/s)."""

    name = "NUMBER"

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number <= 0:
            self.fail(f"{value!r}: expected a finite number above 0", param, ctx)
        return number


COUNTS, NAMES, POSITIVE = Counts(), Names(), Positive()
