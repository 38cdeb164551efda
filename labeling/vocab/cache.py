"""Response cache: one SQLite file keyed by (backend, model, prompt, params), so re-runs and crashes never re-query.

Every answer is committed as soon as it arrives (WAL journal), so a job killed mid-run keeps everything it was told and a
re-run asks only for what is missing. Failed requests are never cached: a re-run retries them.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from n2m.provenance import now_iso

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    track_id TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    response TEXT NOT NULL,
    created TEXT NOT NULL
)
"""


def cache_key(backend: str, model: str, prompt: Any, params: dict[str, Any]) -> str:
    """SHA-1 over the canonical JSON of (backend, model identity, prompt messages, generation params)."""
    blob = json.dumps([backend, model, prompt, params], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha1(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """SQLite-backed answers; ``path=None`` keeps them in memory (``--no-cache``)."""

    def __init__(self, path: str | Path | None):
        self.path = None if path is None else str(path)
        if self.path is not None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path or ":memory:")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        """The cached answers among ``keys`` (absent keys are left out)."""
        keys = list(keys)
        found: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(self._db.execute(f"SELECT key, response FROM responses WHERE key IN ({marks})", chunk))
        return found

    def put(self, key: str, response: str, *, backend: str, model: str, track_id: str, prompt_id: str) -> None:
        """Store one answer and commit it at once (crash safety at request granularity)."""
        self._db.execute(
            "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, backend, model, track_id, prompt_id, response, now_iso()),
        )
        self._db.commit()

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
