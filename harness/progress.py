"""The one progress-bar helper: tqdm on stderr, silenced by ``EDITBENCH_NO_PROGRESS=1``."""

from __future__ import annotations

import os

from tqdm.auto import tqdm


def progress(iterable=None, **kwargs):
    disable = os.environ.get("EDITBENCH_NO_PROGRESS") == "1" or kwargs.pop("disable", False)
    return tqdm(iterable, disable=disable, dynamic_ncols=True, leave=False, **kwargs)
