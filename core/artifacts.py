"""The offline world that ships with the package: the default world's pocket model and trained
editors, and the lifelong scenario's model, the same bytes on every machine.

Training turns a CPU's rounding (its kernel set, its thread count) into a different model: the
pocket model and the hypernetwork editors that the default run trains on a user's machine gave
efficacies that differed by up to 0.23 between two CPUs of one size (issue 26). So the builds the
default run needs are built once by the project (``editbench artifacts --rebuild``), committed
under ``artifacts/`` and installed with the package; the cache looks here first and uses a
shipped entry in place, read-only, once every file's SHA-256 matches ``MANIFEST.json``.

An entry is named by the path it would have in the cache without its code hash
(``models/pocket-<digest>``, ``hypernets/mend-<digest>``), and that path is a hash of everything
that made it (world, model config, training settings, model fingerprint, data, seed), so a shipped
entry is only ever used where the cache would have used its own build. The code that builds an
entry is the other half of its identity (``core/identity.py``): the manifest records each entry's
``code`` (the hash of the modules its build runs) and an entry is used only while this editbench's
code hash for it is the same; otherwise the cache builds its own, under the name with the code hash
appended (:func:`coded`), and says so once. ``EDITBENCH_NO_SHIPPED=1`` skips the shipped entries (a
user who wants to train on their own machine; the rebuild itself).

``tests/test_artifacts.py`` fails when the default world, its model settings or an editor's settings
change without a rebuild (the keys no longer match), and when the code that builds an entry changes
(its code hash no longer matches the manifest's): ``editbench artifacts --rebuild`` then builds the
world again with the new code. When the new code builds the same bytes (a change that does not
touch the numbers) only the manifest's code hashes change; when it does not, the shipped world
changes, which is a change to commit and to say (``harness/checks/artifacts.py``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .cache import file_sha256

log = logging.getLogger(__name__)

#: where the shipped entries lie: ``artifacts/`` beside the package's ``core/`` (the repository root
#: in a checkout or an editable install, ``site-packages/editbench/`` in a wheel)
SHIPPED_ROOT = Path(__file__).resolve().parents[1] / "artifacts"
MANIFEST = "MANIFEST.json"
#: the manifest's own layout; a manifest of another format is not read
MANIFEST_FORMAT = 1
SKIP_VARIABLE = "EDITBENCH_NO_SHIPPED"


class ArtifactError(RuntimeError):
    """A shipped file is missing or not the one the manifest names: the installation is damaged."""


@dataclass(frozen=True)
class ShippedEntry:
    name: str  # the entry's cache path, e.g. "models/pocket-3f2a..."
    files: dict[str, str]  # file path inside the entry -> SHA-256
    description: str
    #: the code hash of what built it (``core/identity.py``); None in a manifest from before
    code: str | None = None


def coded(name: str, code: str) -> str:
    """The cache's name for entry ``name`` built by code ``code``: builds by other code never share
    a folder, so none is reused by code that would have built it otherwise."""
    return f"{name}-{code}"


def uncoded(name: str) -> tuple[str, str]:
    """(shipped name, code hash) of a cache name written by :func:`coded`."""
    entry, _, code = name.rpartition("-")
    return entry, code


def folder_files(folder: Path) -> list[str]:
    """Every file under ``folder``, as relative POSIX paths, sorted."""
    return [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]


def folder_digests(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative POSIX path -> SHA-256), in sorted order."""
    return {relative: file_sha256(folder / relative) for relative in folder_files(folder)}


def read_manifest(root: Path = SHIPPED_ROOT) -> dict:
    """The manifest as written, or an empty one where nothing is shipped."""
    path = root / MANIFEST
    if not path.is_file():
        return {"format": MANIFEST_FORMAT, "entries": {}}
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ArtifactError(
            f"{path}: manifest format {manifest.get('format')!r}, this editbench reads "
            f"{MANIFEST_FORMAT}; reinstall editbench"
        )
    return manifest


def entries(root: Path = SHIPPED_ROOT) -> dict[str, ShippedEntry]:
    return {
        name: ShippedEntry(name, dict(e["files"]), e.get("description", ""), e.get("code"))
        for name, e in read_manifest(root).get("entries", {}).items()
    }


def verify(entry: ShippedEntry, root: Path = SHIPPED_ROOT) -> Path:
    """The entry's folder once each of its files has the manifest's SHA-256; else one line naming
    the file. Files the manifest does not name are not there in a sound installation either."""
    folder = root / entry.name
    for relative, expected in entry.files.items():
        path = folder / relative
        if not path.is_file():
            raise ArtifactError(
                f"shipped file {path} is missing; reinstall editbench (or set "
                f"{SKIP_VARIABLE}=1 to build it on this machine)"
            )
        found = file_sha256(path)
        if found != expected:
            raise ArtifactError(
                f"shipped file {path} has SHA-256 {found[:16]}…, the manifest says "
                f"{expected[:16]}…; reinstall editbench, or rebuild with "
                f"`editbench artifacts --rebuild`"
            )
    extra = set(folder_files(folder)) - set(entry.files)
    if extra:
        raise ArtifactError(
            f"shipped folder {folder} holds {sorted(extra)[0]}, which its manifest does "
            f"not list; reinstall editbench"
        )
    return folder


@cache
def _verified(name: str, root: Path) -> Path | None:
    entry = entries(root).get(name)
    return None if entry is None else verify(entry, root)


def _current(name: str, code: str, root: Path) -> ShippedEntry | None:
    """The manifest's entry ``name`` where its code hash is ``code``; a shipped entry built by other
    code is passed over (and said once), since a cache entry from other code is never reused."""
    if os.environ.get(SKIP_VARIABLE, "") not in ("", "0"):
        return None
    entry = entries(root).get(name)
    if entry is None or entry.code == code:
        return entry
    if (name, code) not in _passed_over:
        _passed_over.add((name, code))
        log.warning("the shipped %s was built by other code (code %s; this editbench's is %s): "
                    "building it on this machine instead (`editbench artifacts --rebuild` renews "
                    "the shipped one)", name, entry.code or "not recorded", code)
    return None


_passed_over: set[tuple[str, str]] = set()


def shipped(name: str, root: Path = SHIPPED_ROOT, *, code: str) -> Path | None:
    """The shipped, verified folder for cache entry ``name`` (``models/pocket-…``) built by code
    ``code``, or None when the package ships no such entry, ships it from other code, or
    ``EDITBENCH_NO_SHIPPED`` is set. Checked once per process."""
    entry = _current(name, code, root)
    return None if entry is None else _verified(name, root)


def located(name: str, root: Path = SHIPPED_ROOT, *, code: str) -> Path | None:
    """Where :func:`shipped` would find entry ``name``, without reading its files (a dry run
    reads no weights); None as for :func:`shipped`."""
    return None if _current(name, code, root) is None else root / name


def forget_verified() -> None:
    """Check again on the next call (after a rebuild wrote new files)."""
    _verified.cache_clear()
    _passed_over.clear()
