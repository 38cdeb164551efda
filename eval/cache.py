"""Embedding cache keyed by content, never by path.

An entry's key is SHA-1 over (the audio file's content hash, the model id including its weights hash, the embedding
settings as canonical JSON). Renaming or moving a file keeps its entries; changing a single byte of it, the weights or
a setting (framing, crop, sample rate) misses. Entries are ``.npy`` float32 ``[F, D]`` written atomically
(:func:`n2m.storage.write_bytes_atomic`), so a killed run never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from n2m.storage import write_bytes_atomic, write_json


def default_root() -> Path:
    """``$N2M_CACHE/eval`` or ``$XDG_CACHE_HOME/n2m/eval`` (``~/.cache/n2m/eval``)."""
    if os.environ.get("N2M_CACHE"):
        return Path(os.environ["N2M_CACHE"]) / "eval"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "n2m" / "eval"


def settings_key(model_id: str, settings: dict[str, Any]) -> str:
    """SHA-1 of the model id and canonical JSON of the settings (the part of a key shared by a whole run)."""
    text = json.dumps({"model": model_id, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()


class EmbeddingCache:
    """``root/{settings_key[:16]}/{content_hash[:2]}/{content_hash}.npy``; ``root=None`` disables caching.

    Safe to use from several threads (each entry is one atomic file).
    """

    def __init__(self, root: str | Path | None, model_id: str, settings: dict[str, Any]):
        self.key = settings_key(model_id, settings)
        self.dir = None if root is None else Path(root) / self.key[:16]
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            manifest = self.dir / "settings.json"
            if not manifest.exists():
                write_json(str(manifest), {"model": model_id, "settings": settings, "key": self.key})

    def _path(self, content_hash: str) -> Path:
        assert self.dir is not None
        return self.dir / content_hash[:2] / f"{content_hash}.npy"

    def get(self, content_hash: str) -> np.ndarray | None:
        if self.dir is None:
            return None
        try:
            return np.load(self._path(content_hash), allow_pickle=False)
        except (OSError, ValueError):
            return None

    def put(self, content_hash: str, embeddings: np.ndarray) -> None:
        if self.dir is None:
            return
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(embeddings, np.float32), allow_pickle=False)
        write_bytes_atomic(str(self._path(content_hash)), buffer.getvalue())
