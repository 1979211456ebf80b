"""Python's cycle collector and the heap that torch, transformers and pandas leave at import.

Those imports create a few hundred thousand objects that live as long as the process. CPython's
collector walks all of them at every full collection, and once more while the interpreter ends:
measured on the default run (issue 34), about 0.2 s of each ``--jobs`` cell and 0.9 s between the
end-of-run table and the prompt, a second more before a pipe reading the run's output (``| tee``)
saw its end, while the worker server tore down the same heap. ``gc.freeze`` moves what exists
into a generation no collection walks. Frozen objects are still freed when their last reference
goes; only a reference cycle among them is never collected, and what is frozen here (imported
modules, and at the very end whatever is left) lives until the process ends anyway. It changes
no score: collection order frees nothing a computation reads.
"""

from __future__ import annotations

import atexit
import gc

_final_collection_skipped = False


def freeze_what_exists() -> None:
    """Exempt everything alive now from later collections (a worker's inherited imports)."""
    gc.freeze()


def skip_final_collection() -> None:
    """When the interpreter exits, freeze the heap (an exit handler, registered once), so that
    its last collection has nothing to walk; the exit handlers still run and flush as before."""
    global _final_collection_skipped
    if not _final_collection_skipped:
        atexit.register(gc.freeze)
        _final_collection_skipped = True
