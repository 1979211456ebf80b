"""Snapshots that let a killed run resume exactly where its last stored checkpoint left it.

A snapshot holds only the weights the method declares it edits (safetensors), the method's
lifelong state (safetensors) and the RNG states. It is written to a staging folder, synced and
renamed into place *before* the checkpoint's database transaction commits, and older snapshots are
removed only *after* it commits, so the store's last checkpoint always has its snapshot. The
SHA-256 of every file is committed with the checkpoint and checked before a resume reads it, so a
snapshot that was truncated, damaged or replaced is refused with the file's name, never used.
Only the process holding the results folder's lock writes here, so whatever staging folders it
finds were left by a killed writer and are removed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .cache import file_sha256, fsync_dir, publish_dir, remove_stale_staging, staging_dir
from .faults import fault_point

FILES = ("weights.safetensors", "state.safetensors", "rng.safetensors", "meta.json")


class SnapshotError(RuntimeError):
    """A stored checkpoint's snapshot is missing, damaged or not the one written; the message names
    the file and says how to start the method over."""


def save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``safetensors``' ``save_file``, whose failure to write (a full disk, a file-size limit)
    comes as a ``SafetensorError`` naming no file: as the ``OSError`` it is, with the file, so it
    is explained in one line like any other full disk (``cli/group.py``) and the run stops there
    rather than failing method after method."""
    try:
        save_file(tensors, path)
    except SafetensorError as exc:
        found = re.search(r"os error (\d+)", str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None


def snapshot_dir(root: Path, n_edits: int) -> Path:
    return root / f"edits-{n_edits:09d}"


def save_snapshot(root: Path, n_edits: int, model: nn.Module, parameter_names: list[str],
                  method_state: dict[str, torch.Tensor],
                  generator: torch.Generator) -> dict[str, str]:
    """Write the snapshot at ``n_edits`` and return the SHA-256 of each of its files, to be
    committed with the checkpoint."""
    final = snapshot_dir(root, n_edits)
    remove_stale_staging(final)
    if final.exists():
        shutil.rmtree(final)
    tmp = staging_dir(final)
    weights = {name: model.get_parameter(name).detach().to("cpu").contiguous()
               for name in parameter_names}
    save_tensors(weights, tmp / "weights.safetensors")
    save_tensors({k: v.detach().to("cpu").contiguous() for k, v in method_state.items()},
                 tmp / "state.safetensors")
    save_tensors({"torch": torch.get_rng_state(), "generator": generator.get_state()},
                 tmp / "rng.safetensors")
    (tmp / "meta.json").write_text(json.dumps({"n_edits": n_edits, "parameters": parameter_names}))
    checksums = {}
    for name in FILES:
        with open(tmp / name, "rb") as handle:
            os.fsync(handle.fileno())
        checksums[name] = file_sha256(tmp / name)
    fault_point("snapshot-staged")
    publish_dir(tmp, final)
    fsync_dir(root)
    return checksums


def _restart_hint(label: str) -> str:
    return f"rerun with --restart {label} to drop {label}'s stored results and run it again"


def verify_snapshot(root: Path, n_edits: int, checksums: dict[str, str], label: str) -> Path:
    """The snapshot folder of the checkpoint at ``n_edits``, once every file is there and matches
    the checksum stored with it; otherwise a :class:`SnapshotError` naming the file."""
    folder = snapshot_dir(root, n_edits)
    for name in checksums or FILES:
        path = folder / name
        if not path.is_file():
            raise SnapshotError(f"{label}: the store has a checkpoint at {n_edits} edits but its "
                                f"snapshot file {path} is missing; {_restart_hint(label)}")
        if checksums and file_sha256(path) != checksums[name]:
            raise SnapshotError(f"{label}: snapshot file {path} is not the one written with the "
                                f"checkpoint at {n_edits} edits (its SHA-256 differs: truncated, "
                                f"damaged or replaced); {_restart_hint(label)}")
    return folder


def _load(path: Path, label: str) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise SnapshotError(f"{label}: cannot read snapshot file {path} ({exc}); "
                            f"{_restart_hint(label)}") from None


def load_snapshot(root: Path, n_edits: int, model: nn.Module, generator: torch.Generator,
                  checksums: dict[str, str] | None = None,
                  label: str = "the method") -> dict[str, torch.Tensor]:
    """Check the snapshot against ``checksums`` (file -> SHA-256, as committed with the checkpoint;
    empty for stores that predate them), copy its weights into ``model``, restore the RNGs and
    return the method state."""
    folder = verify_snapshot(root, n_edits, checksums or {}, label)
    weights = _load(folder / "weights.safetensors", label)
    rng = _load(folder / "rng.safetensors", label)
    state = _load(folder / "state.safetensors", label)
    with torch.no_grad():
        for name, tensor in weights.items():
            param = model.get_parameter(name)
            param.copy_(tensor.to(param.device, param.dtype))
    torch.set_rng_state(rng["torch"])
    generator.set_state(rng["generator"])
    return state


def prune_snapshots(root: Path, keep: int) -> None:
    """Remove every snapshot but ``keep``'s, and any staging folder a killed write left."""
    for folder in root.glob("edits-*"):
        if folder.name != snapshot_dir(root, keep).name:
            shutil.rmtree(folder, ignore_errors=True)
    for stale in root.glob(".edits-*"):
        shutil.rmtree(stale, ignore_errors=True)
