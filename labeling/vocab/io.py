"""The vocabulary contract on disk: ``vocab/NAME.parquet`` (``n2m.schema.VOCAB_SCHEMA``) plus ``vocab/NAME.json``.

The Parquet table holds one row per entry: ``id`` (``n2m.schema.text_id`` of the text, unique), ``text``, ``kind``
(long | short), ``aspect`` (short only) and the provenance columns ``track_id``, ``backend``, ``model``, ``prompt_id``.
The JSON sidecar records counts, backend, model, prompt template hash, date, rejections by reason, duplicates removed,
config and versions. Long-form vocabularies also get ``vocab/NAME.rejected.jsonl``: every rejected sentence with its
reason and provenance. Files are written atomically (:mod:`n2m.storage`), the JSON last (a vocabulary exists when
its JSON does).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from n2m.errors import UserError
from n2m.provenance import file_hash
from n2m.schema import VOCAB_SCHEMA
from n2m.storage import Store, read_json, write_json

VOCAB_FORMAT = 1


def check_out(path: str) -> Path:
    """Validate an ``--out`` path (must end in ``.parquet``); its folder is created."""
    out = Path(path)
    if out.suffix != ".parquet":
        raise UserError(f"--out {path}: expected a path ending in .parquet (e.g. vocab/NAME.parquet)")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def sidecar(path: str | Path) -> Path:
    """``vocab/NAME.json`` next to ``vocab/NAME.parquet``."""
    return Path(path).with_suffix(".json")


def rejected_path(path: str | Path) -> Path:
    """``vocab/NAME.rejected.jsonl`` next to ``vocab/NAME.parquet``."""
    return Path(path).with_suffix(".rejected.jsonl")


def write_vocab(path: str | Path, rows: list[dict[str, str]], summary: dict[str, Any],
                rejections: Iterable[dict[str, str]] | None = None) -> dict[str, Any]:
    """Write the table, the rejections (if given) and the JSON sidecar; returns the summary as written."""
    out = Path(path)
    ids = [row["id"] for row in rows]
    if len(set(ids)) != len(ids):
        raise ValueError("vocabulary ids must be unique (deduplicate before writing)")
    table = pa.Table.from_pylist(rows, schema=VOCAB_SCHEMA)
    store = Store(str(out))
    with store.atomic_writer(str(out)) as handle:
        pq.write_table(table, handle, compression="zstd")
    if rejections is not None:
        with store.atomic_writer(str(rejected_path(out))) as handle:
            for entry in rejections:
                handle.write((json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"))
    summary = {**summary, "format": VOCAB_FORMAT, "parquet": out.name, "parquet_sha1": file_hash(out),
               "entries": table.num_rows}
    write_json(str(sidecar(out)), summary)
    return summary


def read_vocab(path: str) -> tuple[pa.Table, dict[str, Any] | None]:
    """The table and its JSON sidecar (``None`` when the sidecar is missing)."""
    source = Path(path)
    if not source.is_file():
        raise UserError(f"{path}: no such vocabulary file")
    try:
        table = pq.read_table(source)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path}: not a readable Parquet file: {err}") from err
    missing = set(VOCAB_SCHEMA.names) - set(table.column_names)
    if missing:
        raise UserError(f"{path}: not a vocabulary table (missing columns {', '.join(sorted(missing))})")
    meta = sidecar(source)
    return table, (read_json(str(meta)) if meta.is_file() else None)
