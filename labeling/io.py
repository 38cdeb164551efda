"""NPZ round trips of the labelling job's files (top-K lists, global counts), local paths or fsspec URIs; atomic writes
and reads through :mod:`n2m.storage`."""

from __future__ import annotations

import io

import numpy as np

from n2m.storage import read_bytes, write_bytes_atomic


def save_npz(path: str, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(read_bytes(path)), allow_pickle=False) as data:
        return {name: data[name] for name in data.files}
