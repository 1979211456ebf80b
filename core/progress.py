"""The one progress-bar helper: tqdm on stderr when it is a terminal.

``EDITBENCH_NO_PROGRESS=1`` silences it; ``EDITBENCH_PROGRESS=1`` forces it on (logs of CI jobs).
"""

from __future__ import annotations

import os

from tqdm.auto import tqdm


def progress(iterable=None, **kwargs):
    quiet = kwargs.pop("disable", False)
    if quiet or os.environ.get("EDITBENCH_NO_PROGRESS") == "1":
        disable = True
    elif os.environ.get("EDITBENCH_PROGRESS") == "1":
        disable = False
    else:
        disable = None  # tqdm: only on a terminal
    return tqdm(iterable, disable=disable, dynamic_ncols=True, leave=False, **kwargs)
