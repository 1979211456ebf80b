"""Key statistics and null-space projections in the files the MEMIT/ROME and AlphaEdit releases
write.

Statistics over 100,000 Wikipedia articles take hours on a 7-8B model; a user who already has the
releases' files (their own runs, or the ones kmeng01/memit downloads from its ``REMOTE_ROOT_URL``)
points editbench at them instead.

**Layer statistics** (``stats_import``, both releases). ``rome/layer_stats.py`` (kmeng01/memit
80426fd, line 121; jianghoucheng/AlphaEdit f5248d3, line 162) files them as::

    STATS_DIR/<model>/<dataset>_stats/<module>_<precision>_<stats>[_t{batch_tokens}][_<samples>].npz

``<model>`` is ``config._name_or_path`` with ``/`` made ``_`` (MEMIT) or its last path component
(AlphaEdit, line 159); ``<module>`` is the edited projection's module name, which is ours
(``model.layers.4.mlp.down_proj``); ``<stats>`` the sorted collected statistics joined by ``-``
(``mom2``); the ``_t{batch_tokens}`` part is written literally (the release lacks an ``f``).
``util/runningstats.py`` saves a ``CombinedStat`` with ``numpy.savez`` (line 1512): keys
``mom2.mom2`` (the *sum* of ``k k^T``, in ``<precision>``, line 506), ``mom2.count`` (tokens),
``mom2.constructor`` and ``sample_size``; ``E[k k^T]`` is ``mom2 / count`` (``moment()``, line 500).

**AlphaEdit's projection** (``projection_file``). ``experiments/evaluate.py`` (line 208) saves
``torch.save(P, "null_space_project.pt")``: one float32 tensor ``(len(hparams.layers), d, d)``, the
projection of each edited layer in the order of ``hparams.layers``, made by ``get_project``
(line 405).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ...core.method import MethodSetupError
from .stats import KeyStats

log = logging.getLogger(__name__)

_PRECISIONS = "float16|float32|float64"
_STATISTICS = "mom2|mean|norm_mean"  # the release's STAT_TYPES (rome/layer_stats.py line 20)


def _release_name(module: str) -> re.Pattern[str]:
    return re.compile(
        rf"{re.escape(module)}_(?:{_PRECISIONS})_((?:{_STATISTICS})(?:-(?:{_STATISTICS}))*)"
        r"(?:_t(?:\{batch_tokens\}|\d+))?(?:_(\d+))?\.npz"
    )


def _model_folders(name_or_path: str) -> set[str]:
    """The folder names the two releases give this model's statistics."""
    return {name_or_path.replace("/", "_"), name_or_path.rstrip("/").rsplit("/")[-1]}


def find_release_stats(folder: Path, module: str, n_samples: int, name_or_path: str = "") -> Path:
    """The release's statistics file for ``module`` anywhere under ``folder`` (its STATS_DIR, one
    model's folder or one ``<dataset>_stats`` folder). Among several, those of ``n_samples``
    samples, then those in this model's folder; still several, or none, is an error naming what was
    found."""
    if not folder.is_dir():
        raise MethodSetupError(
            f"stats_import={str(folder)!r} is not a folder (point it at the release's data/stats)"
        )
    pattern = _release_name(module)
    found = []
    for path in sorted(folder.rglob(f"{module}_*.npz")):
        match = pattern.fullmatch(path.name)
        if match and "mom2" in match.group(1).split("-"):
            found.append((path, int(match.group(2)) if match.group(2) else None))
    if not found:
        raise MethodSetupError(
            f"stats_import={str(folder)!r}: no file {module}_<precision>_mom2[_<samples>].npz "
            f"under it (the MEMIT/ROME release's layer-stats name for {module})"
        )
    for keep in (
        lambda p, n: n == n_samples,
        lambda p, n: bool(_model_folders(name_or_path) & set(p.parts)),
    ):
        kept = [(p, n) for p, n in found if keep(p, n)]
        found = kept or found
    if len(found) > 1:
        raise MethodSetupError(
            f"stats_import={str(folder)!r}: several statistics files for {module} "
            f"({', '.join(str(p.relative_to(folder)) for p, _ in found)}); "
            "point it at one model's folder"
        )
    path, samples = found[0]
    if samples is not None and samples != n_samples:
        log.warning(
            "%s holds statistics over %d samples, not mom2_n_samples=%d; using it",
            path,
            samples,
            n_samples,
        )
    return path


def read_release_stats(path: Path, module: str, width: int) -> KeyStats:
    """``E[k k^T]`` (float32) from one release ``.npz``, checked against the width of ``module``'s
    keys."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise MethodSetupError(f"{path}: not a readable .npz file ({exc})") from None
    missing = [key for key in ("mom2.mom2", "mom2.count") if key not in arrays]
    if missing:
        raise MethodSetupError(f"{path}: not MEMIT/ROME layer statistics: lacks "
                               f"{', '.join(missing)} "
                               f"(holds {', '.join(sorted(arrays)) or 'nothing'})")
    total, count = arrays["mom2.mom2"], int(arrays["mom2.count"])
    if total.shape != (width, width):
        raise MethodSetupError(
            f"{path}: mom2 is {'x'.join(map(str, total.shape))} but {module} takes "
            f"{width}-wide keys ({width}x{width} expected); these statistics are of another "
            "model or layer"
        )
    if count < 1:
        raise MethodSetupError(f"{path}: mom2.count is {count}; the statistics are empty")
    samples = arrays.get("sample_size")
    # NaN: the release's null
    n_samples = int(samples) if samples is not None and not math.isnan(float(samples)) else 0
    mom2 = torch.from_numpy(total.astype(np.float64) / count).float()
    corpus = f"release-{path.parent.name}-{path.stem}"
    log.info("imported key statistics of %s from %s (%d tokens)", module, path, count)
    return KeyStats(mom2, corpus, n_samples, count)


def import_release_stats(folder: Path, modules: Sequence[str], widths: Sequence[int],
                         n_samples: int, name_or_path: str = "") -> dict[str, KeyStats]:
    return {
        module: read_release_stats(
            find_release_stats(folder, module, n_samples, name_or_path), module, width
        )
        for module, width in zip(modules, widths)
    }


def read_null_space_projection(path: Path, layers: Sequence[int], width: int) -> list[torch.Tensor]:
    """The projections of AlphaEdit's ``null_space_project.pt``, one per edited layer in order."""
    if not path.is_file():
        raise MethodSetupError(f"projection_file={str(path)!r} does not exist")
    try:  # mmap: Llama-3-8B's five 14336x14336 projections are 4 GB
        projection = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise MethodSetupError(
            f"{path}: not a tensor file torch.load can read safely ({str(exc).splitlines()[0]})"
        ) from None
    expected = (len(layers), width, width)
    if not isinstance(projection, torch.Tensor) or tuple(projection.shape) != expected:
        what = (
            f"a {'x'.join(map(str, projection.shape))} tensor"
            if isinstance(projection, torch.Tensor)
            else f"a {type(projection).__name__}"
        )
        raise MethodSetupError(
            f"{path}: holds {what}, but AlphaEdit's null_space_project.pt for layers "
            f"{','.join(map(str, layers))} of this model is {'x'.join(map(str, expected))} "
            "(one projection per edited layer, in order)"
        )
    matrices = [matrix.float() for matrix in projection.unbind(0)]
    for layer, matrix in zip(layers, matrices):
        if not torch.allclose(matrix, matrix.T, atol=1e-4):
            raise MethodSetupError(
                f"{path}: the matrix for layer {layer} is not symmetric, so not a null-space "
                "projection"
            )
    log.info(
        "imported AlphaEdit null-space projections for layers %s from %s",
        ",".join(map(str, layers)),
        path,
    )
    return matrices
