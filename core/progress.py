"""The one progress helper: a tqdm bar on a terminal, log lines everywhere else.

Batch jobs and CI logs have no terminal, and a bar there is either invisible or a wall of carriage
returns; so off a terminal progress is a log line every ``EDITBENCH_PROGRESS_EVERY`` seconds (30 by
default) and one at the end, each with the count, the elapsed time, the rate and an estimate of
what is left.
``EDITBENCH_NO_PROGRESS=1`` silences both; ``EDITBENCH_PROGRESS=1`` forces the bar and
``EDITBENCH_PROGRESS=log`` the log lines (a run's cells side by side share one terminal: two bars
would overwrite each other).
"""

from __future__ import annotations

import logging
import os
import sys
import time

from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


class LoggedProgress:
    """The part of tqdm's interface editbench uses, reported as log lines."""

    def __init__(self, iterable=None, total: int | None = None, initial: int = 0, desc: str = "",
                 unit: str = "it", every: float | None = None, **_ignored) -> None:
        self.iterable = iterable
        self.total = (total if total is not None
                      else (len(iterable) if hasattr(iterable, "__len__") else None))
        self.n = self.start_n = initial
        self.desc, self.unit = desc, unit
        self.every = (every if every is not None
                      else float(os.environ.get("EDITBENCH_PROGRESS_EVERY", "30")))
        self.started = self.last = time.monotonic()
        self.postfix = ""
        self.closed = False
        self.logged = initial  # the count of the last line written

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        done = self.n - self.start_n
        count = f"{self.n}/{self.total} {self.unit}s" if self.total else f"{self.n} {self.unit}s"
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        eta = ""
        if self.total and done > 0 and self.n < self.total:
            eta = f", about {_seconds(elapsed / done * (self.total - self.n))} to go"
        rate = f", {_rate(done / elapsed)} {self.unit}s/s" if done > 0 and elapsed > 0 else ""
        extra = f" [{self.postfix}]" if self.postfix else ""
        return f"{self.desc}: {count}{share}, {_seconds(elapsed)} elapsed{rate}{eta}{extra}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last, self.logged = now, self.n
            log.info(self.line())

    def close(self) -> None:
        # the last count, unless its line is written already
        if not self.closed and self.n != self.logged:
            log.info(self.line())
        self.closed = True


def progress(iterable=None, **kwargs):
    quiet = kwargs.pop("disable", False)
    if quiet or os.environ.get("EDITBENCH_NO_PROGRESS") == "1":
        return tqdm(iterable, disable=True, **kwargs)
    chosen = os.environ.get("EDITBENCH_PROGRESS")
    if chosen == "1" or (chosen != "log" and sys.stderr.isatty()):
        return tqdm(iterable, disable=False, dynamic_ncols=True, leave=False, **kwargs)
    return LoggedProgress(iterable, **kwargs)
