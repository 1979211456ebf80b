"""How editbench logs: one format for the command line and for the processes it starts (a sweep's
worker processes begin with a bare interpreter, so they are given the same set-up)."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%H:%M:%S"
#: libraries whose INFO lines say nothing a user acts on
NOISY = ("httpx", "urllib3", "filelock")


def configure(level: int) -> None:
    logging.basicConfig(level=level, format=FORMAT, datefmt=DATE_FORMAT)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
