"""NPZ round trips of the labelling job's files (top-K lists, global counts), local paths or fsspec URIs; atomic writes
and reads through :mod:`n2m.storage`."""

from __future__ import annotations

import io

import numpy as np

from n2m.layout import read_label_manifest
from n2m.storage import glob, read_bytes, write_bytes_atomic

# glob and read_label_manifest are re-exported while labeling/label_eval.py still imports them from here.
__all__ = ["glob", "load_npz", "read_label_manifest", "save_npz"]


def save_npz(path: str, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(read_bytes(path)), allow_pickle=False) as data:
        return {name: data[name] for name in data.files}
