"""Small file helpers for the labelling job: NPZ round trips, globbing and folder moves, local paths or fsspec URIs
(atomic writes: :func:`n2m.provenance.write_bytes_atomic`)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import fsspec
import numpy as np

from n2m.provenance import write_bytes_atomic


def is_remote(path: str) -> bool:
    return "://" in str(path)


def exists(path: str) -> bool:
    if is_remote(path):
        fs, _, (resolved,) = fsspec.get_fs_token_paths(path)
        return fs.exists(resolved)
    return Path(path).exists()


def _fs(path: str):
    fs, _, (resolved,) = fsspec.get_fs_token_paths(path)
    return fs, resolved


def remove_work_dir(path: str, parent: str) -> None:
    """Delete a hidden work folder (``.NAME...``) that sits directly in ``parent``, and nothing else."""
    from pathlib import PurePosixPath

    target = PurePosixPath(path.rstrip("/"))
    if str(target.parent) != parent.rstrip("/") or not target.name.startswith(".") or target.name in (".", ".."):
        raise ValueError(f"refusing to delete {path}: not a hidden work folder directly inside {parent}")
    fs, resolved = _fs(path)
    if fs.exists(resolved):
        fs.rm(resolved, recursive=True)


def move_dir(source: str, target: str) -> None:
    """Rename a folder (one ``rename`` on a local disk; a copy-and-delete on object stores)."""
    if not is_remote(source):
        os.replace(source, target)
        return
    fs, resolved = _fs(source)
    fs.mv(resolved, _fs(target)[1], recursive=True)


def read_bytes(path: str) -> bytes:
    with fsspec.open(path, "rb") as handle:
        return handle.read()


def save_npz(path: str, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(read_bytes(path)), allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def glob(pattern: str) -> list[str]:
    """Sorted matches of a glob (URIs keep their scheme)."""
    fs, _, paths = fsspec.get_fs_token_paths(pattern)
    if is_remote(pattern):
        protocol = pattern.split("://", 1)[0]
        return sorted(f"{protocol}://{p}" for p in paths)
    return sorted(paths)


def read_label_manifest(label_dir: str) -> dict:
    """``labels/NAME/manifest.json`` of a finished label set (one-line error otherwise)."""
    import json

    from n2m.errors import UserError

    path = f"{label_dir.rstrip('/')}/manifest.json"
    if not exists(path):
        raise UserError(f"{label_dir}: no manifest.json (not a finished n2m label set)")
    return json.loads(read_bytes(path))
