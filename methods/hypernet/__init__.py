"""The shared core of the hypernetwork editors (MEND, MALMEN, RLEdit).

``modules``: which weights are edited and the hooks that read keys and output gradients there;
``net``: the normaliser and the residual low-rank editor network; ``core``: the method base class
(keys and gradients, map, update, apply); ``training``: the one trainer for all three (sequences of edit
batches, back-tracking, validation, resumable training states); ``storage``: what a trained editor
and a training run leave on disk.
"""

from .config import MALMEN_RELEASE_DATA, RELEASE_PRESET, RLEDIT_RELEASE_DATA, HypernetConfig
from .core import HypernetMethod
from .modules import model_presets

__all__ = ["MALMEN_RELEASE_DATA", "RELEASE_PRESET", "RLEDIT_RELEASE_DATA", "HypernetConfig", "HypernetMethod", "model_presets"]
