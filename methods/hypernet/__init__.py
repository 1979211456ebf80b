"""The shared core of the editors built on keys and output gradients (MEND, MALMEN, RLEdit,
UltraEdit).

``modules``: which weights are edited and the hooks that read keys and output gradients there;
``net``: the normaliser and the residual low-rank editor network; ``core``: the untrained base class
(keys and gradients, normalisers, apply; UltraEdit's) and the trained one (the network's map and
update; the hypernetworks'); ``ridge``: the least-squares solve of MALMEN and UltraEdit;
``training``: the one trainer for all three hypernetworks (sequences of edit batches,
back-tracking, validation, resumable training states); ``storage``: what a trained editor and a
training run leave on disk.
"""

from .config import (
           MALMEN_RELEASE_DATA,
           RELEASE_PRESET,
           RLEDIT_RELEASE_DATA,
           EditorCoreConfig,
           HypernetConfig,
)
from .core import EditorCore, HypernetMethod
from .modules import model_presets

__all__ = [
    "MALMEN_RELEASE_DATA",
    "RELEASE_PRESET",
    "RLEDIT_RELEASE_DATA",
    "EditorCore",
    "EditorCoreConfig",
    "HypernetConfig",
    "HypernetMethod",
    "model_presets",
]
