"""The unedited model's baseline, kept in the cache for the next run of the same plan (issue 34).

A run scores the unedited model once before any method (``Runner._baseline``): its predictions at
every neighbourhood prompt, its greedy answers to every scored prompt, what it knows of the edits.
Made again into another folder, the same run does the same work to the bit: same model, records,
settings, code and numerics. So the result is filed in the cache under all of them, and a warm run
copies it into its store instead of computing it (about 2.5 s of the default run's minute, on the
main process before any cell can start). The key (:func:`baseline_key`) is the run's id (task,
data, protocol and settings, ``resolve.py``), the model's fingerprint (its weights, not its path:
``core/models.py``), the scoring backend, the package's code (``core/identity.py``) and the
numerics (``core/numerics.py``); any change computes it again. Runs with general-capability sets
are not cached (their unedited scores are stored with them).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from ...core.cache import atomic_write_bytes
from ...core.records import SamplePrompt

log = logging.getLogger(__name__)

FOLDER = "baselines"
FORMAT = 1


@dataclass(frozen=True)
class StoredBaseline:
    """What ``Runner._baseline`` writes into a store, as the store takes it."""

    predictions: list[tuple[str, str, tuple[int, ...], float]]  # prompt, target, argmax, accuracy
    generations: dict[str, str]
    prompts: list[SamplePrompt]
    summary: dict[str, float]


def baseline_key(run_id: str, model_fingerprint: str, backend: str, code: str,
                 numerics: dict[str, object]) -> str:
    text = json.dumps({"format": FORMAT, "run": run_id, "model": model_fingerprint,
                       "backend": backend, "code": code, "numerics": numerics},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _path(cache_dir: Path, key: str) -> Path:
    return cache_dir / FOLDER / f"{key}.json"


def load(cache_dir: Path, key: str) -> StoredBaseline | None:
    """The baseline filed under ``key``; None when there is none or it cannot be read (then it is
    computed again and filed anew)."""
    path = _path(cache_dir, key)
    try:
        found = json.loads(path.read_text())
        return StoredBaseline(
            predictions=[(p, t, tuple(ids), float(acc)) for p, t, ids, acc in found["predictions"]],
            generations={str(k): str(v) for k, v in found["generations"].items()},
            prompts=[SamplePrompt(**fields) for fields in found["prompts"]],
            summary={str(k): float(v) for k, v in found["summary"].items()})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("the cached baseline %s cannot be read (%s); computing it again", path, exc)
        return None


def save(cache_dir: Path, key: str, baseline: StoredBaseline) -> None:
    """File ``baseline`` under ``key``; a cache that cannot be written costs only the next run's
    time."""
    data = {"predictions": [[p, t, list(ids), acc] for p, t, ids, acc in baseline.predictions],
            "generations": baseline.generations,
            "prompts": [asdict(prompt) for prompt in baseline.prompts],
            "summary": baseline.summary}
    try:
        atomic_write_bytes(_path(cache_dir, key), json.dumps(data).encode())
    except OSError as exc:
        log.debug("baseline not cached: %s", exc)
