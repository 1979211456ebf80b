"""One piece of a report's work done in a second process while this one goes on.

Drawing and saving the figures (matplotlib, one thread) took as long as everything else
``editbench report --html`` does (issue 34: the default run's report, 3.2 s on 2 cores, half of
it figures). On Linux the figures are drawn in a forked child, which shares the collected results
without copying them and sends back only what it drew (paths and captions); the pages that need
no figure are written meanwhile. Elsewhere (no cheap fork), or if the child fails for any reason,
the work is done here, in line, so a report never depends on the second process."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Background(Generic[T]):
    """``work()`` started now; :meth:`result` returns what it returned."""

    def __init__(self, work: Callable[[], T]) -> None:
        self._work = work
        self._process = None
        self._receiver = None
        if sys.platform != "linux":
            return
        try:
            context = multiprocessing.get_context("fork")
            self._receiver, sender = context.Pipe(duplex=False)
            self._process = context.Process(target=_child, args=(work, sender), daemon=True)
            self._process.start()
            sender.close()
        except (OSError, ValueError) as exc:  # no fork here: do it in line
            log.debug("drawing in line: %s", exc)
            self._process = None

    def result(self) -> T:
        if self._process is None:
            return self._work()
        try:
            status, value = self._receiver.recv()
        except (EOFError, OSError):  # the child died without a word
            status, value = "lost", None
        finally:
            self._receiver.close()
            self._process.join()
        if status == "ok":
            return value
        log.debug("the background work failed (%s); doing it in line", value)
        return self._work()


def _child(work: Callable[[], T], sender) -> None:
    try:
        sender.send(("ok", work()))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which does it again
        try:
            sender.send(("error", repr(exc)))
        except Exception:  # noqa: BLE001
            pass
    finally:
        sender.close()
        os._exit(0)  # no atexit handlers or flushes of the parent's inherited buffers
