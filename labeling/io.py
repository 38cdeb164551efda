"""NPZ round trips of the labelling job's files (top-K lists, global counts), local paths or fsspec URIs; atomic writes
and reads through :mod:`n2m.storage`."""

from __future__ import annotations

import io

import numpy as np

from n2m.storage import exists, glob, read_bytes, write_bytes_atomic

__all__ = ["glob", "load_npz", "read_label_manifest", "save_npz"]  # glob: still imported from here by label_eval


def save_npz(path: str, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(read_bytes(path)), allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def read_label_manifest(label_dir: str) -> dict:
    """``labels/NAME/manifest.json`` of a finished label set (one-line error otherwise)."""
    import json

    from n2m.errors import UserError

    path = f"{label_dir.rstrip('/')}/manifest.json"
    if not exists(path):
        raise UserError(f"{label_dir}: no manifest.json (not a finished n2m label set)")
    return json.loads(read_bytes(path))
