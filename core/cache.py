"""Where editbench keeps what it builds once and reuses: trained models, statistics, downloads.

Everything here is written whole to a staging name and renamed into place, so a reader sees the
old entry or the new one, never half of one. An entry that takes long to build (the pocket model,
key statistics, a trained editor) is built under :func:`building`, an exclusive lock of that entry:
a second process waits for the first and then uses its result instead of building it again. The
same lock, without waiting, keeps a results folder to one writing process (:func:`hold_folder`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one process per folder is then the user's to keep
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """``$EDITBENCH_CACHE`` if set, else the platform's user cache folder."""
    override = os.environ.get("EDITBENCH_CACHE")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("editbench"))


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """``text`` as one harmless path component: other characters become ``_``, no leading dot (so
    never ``.`` or ``..``), and a short digest of the original when anything was changed, so two
    different texts never share a name."""
    cleaned = _UNSAFE.sub("_", text).lstrip(".")
    if cleaned == text and cleaned:
        return cleaned
    return f"{cleaned or 'x'}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks (snapshots, shipped artefacts)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def publish_dir(tmp: Path, final: Path) -> Path:
    """Move a fully written folder into place atomically; if another process won, keep theirs."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, final)
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def staging_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))


def remove_stale_staging(final: Path) -> None:
    """Remove what killed writers of ``final`` left behind (``staging_dir`` folders, temp files).
    Call it only while no one else can be writing ``final``: under its lock."""
    if not final.parent.is_dir():
        return
    for stale in final.parent.glob(f".{final.name}.*"):
        log.info("removing %s, left by an interrupted write", stale)
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` and rename it over ``path``; on failure nothing is left
    behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- exclusive locks -------------------------------------------------------------------------------
class Busy(RuntimeError):
    """Another process holds the lock; the message names it."""


def _holder(lock: Path) -> str:
    """Who holds ``lock``, from what it wrote there (it may not have written yet)."""
    try:
        info = json.loads(lock.read_text())
        return f"process {info['pid']} on {info['host']} (since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _describe_self() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "since": time.strftime("%Y-%m-%d %H:%M:%S")})


#: locks this process holds with ``reentrant=True``: path -> (open file, depth)
_held: dict[str, tuple[object, int]] = {}


@contextmanager
def exclusive_lock(lock: Path, what: str, *, wait: bool, reentrant: bool = False,
                   hint: str = "wait for it to finish, or stop it") -> Iterator[None]:
    """Hold ``lock`` (an advisory ``flock`` on that file) for the block.

    ``wait=False`` raises :class:`Busy` naming the holder when another process has it; ``wait=True``
    logs who has it and blocks until it is free. The lock dies with its process, so a killed
    holder never leaves a stale lock. ``reentrant``: a second acquisition by this process passes.
    """
    key = os.path.realpath(lock)
    if reentrant and key in _held:
        handle, depth = _held[key]
        _held[key] = (handle, depth + 1)
        try:
            yield
        finally:
            handle, depth = _held[key]
            _held[key] = (handle, depth - 1)
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock, "a+")  # noqa: SIM115 (held across the yield)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(lock)
                if not wait:
                    raise Busy(f"{what} is in use by {holder}; {hint}") from None
                log.warning("waiting for %s, which is building %s", holder, what)
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                log.info("%s is free; continuing", what)
        handle.seek(0)
        handle.truncate()
        handle.write(_describe_self())
        handle.flush()
        if reentrant:
            _held[key] = (handle, 1)
        try:
            yield
        finally:
            if reentrant:
                _held.pop(key, None)
            try:
                handle.truncate(0)
            except OSError:
                pass
    finally:
        handle.close()  # closing the file releases the lock


def entry_lock_path(final: Path) -> Path:
    """Beside the entry, in a hidden folder, so listings and globs of the entries never see it."""
    return final.parent / ".locks" / f"{final.name}.lock"


@contextmanager
def building(final: Path, what: str) -> Iterator[None]:
    """Hold the lock of the cache entry ``final`` while building it; a second process waits (with a
    message) and should then find ``final`` built. Stale staging left by killed builders of
    ``final`` is removed once the lock is held."""
    with exclusive_lock(entry_lock_path(final), what, wait=True):
        remove_stale_staging(final)
        yield


LOCK_NAME = ".lock"


@contextmanager
def hold_folder(folder: Path, what: str) -> Iterator[None]:
    """One writing process per results folder: raise :class:`Busy` naming the process that writes
    ``folder`` now. Reentrant within a process."""
    with exclusive_lock(folder / LOCK_NAME, what, wait=False, reentrant=True,
                        hint="wait for it to finish, or use another --out"):
        yield
