"""Manifests as build inputs: one :class:`~n2m.pipelines.inputs.Source` per row, streamed by the one manifest reader
(:mod:`n2m.manifest`: CSV/TSV, JSON Lines, Parquet).

A row names its audio in a ``path`` or ``url`` column (the first non-empty one); the other columns become the clip's
``meta`` and a caption column its ``text``. A row that cannot be used (no path, malformed JSON or CSV, a key given
twice, bytes that are not UTF-8 text) becomes a failed source, never a crash; a manifest without a path column, with a
column name twice, with a header that is not UTF-8, or a ``.parquet`` file Arrow cannot read, is a user error. Values
JSON cannot hold are changed and the change is noted in the source's ``notes``.
"""

from __future__ import annotations

import math
import os
import posixpath
from collections.abc import Iterator
from typing import Any

from n2m.manifest import Row, iter_rows
from n2m.pipelines.inputs import Source, canonical_uri
from n2m.storage import is_remote

PATH_COLUMNS = ("path", "url")  # the first non-empty one names the source
CAPTION_COLUMNS = ("caption", "captions", "text")  # copied (as a list) into each clip's ``text``


def _row_source(row: dict[str, Any], base: str, where: str) -> Source:
    """A manifest row -> Source; a row without a usable path becomes a Source carrying ``error``.

    Values JSON cannot hold are changed and the change is noted: NaN and infinities become null, bytes become text
    when they are UTF-8 (else null). A bytes caption (a Parquet ``binary`` column) is read as UTF-8 text.
    """
    notes: list[str] = []
    raw = next((v for v in (_text(row.get(c), c, notes) for c in PATH_COLUMNS) if isinstance(v, str) and v.strip()),
               None)
    meta = {key: _json_safe(v, key, notes) for key, v in
            ((("_extra" if k is None else str(k)), v) for k, v in row.items() if k not in PATH_COLUMNS)}
    text = _captions(row, notes)
    if raw is None:
        return Source(where, meta, text, f"row has no {' or '.join(PATH_COLUMNS)} value", notes=tuple(notes))
    return Source(canonical_uri(raw, base), meta, text, notes=tuple(notes))


def _text(value: Any, column: str, notes: list[str]) -> Any:
    """``value`` with bytes read as UTF-8 (None, with a note, when they are not UTF-8)."""
    if not isinstance(value, bytes | bytearray | memoryview):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        note = f"column {column!r} holds bytes that are not UTF-8 text: stored as null"
        if note not in notes:
            notes.append(note)
        return None


def _captions(row: dict[str, Any], notes: list[str]) -> tuple[str, ...]:
    for column in CAPTION_COLUMNS:
        value = _text(row.get(column), column, notes)
        if isinstance(value, str) and value.strip():
            return (value.strip(),)
        if isinstance(value, list | tuple):
            texts = (_text(v, column, notes) for v in value)
            return tuple(str(v).strip() for v in texts if v is not None and str(v).strip())
    return ()


def _json_safe(value: Any, column: str, notes: list[str]) -> Any:
    """Manifest values as JSON types (dates and decimals from Parquet become strings). JSON has no NaN or infinity:
    they become null, noted in ``notes``."""
    value = _text(value, column, notes)
    if isinstance(value, float) and not math.isfinite(value):
        note = f"column {column!r} was {value}: stored as null (JSON has no NaN or Infinity)"
        if note not in notes:
            notes.append(note)
        return None
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v, column, notes) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v, column, notes) for v in value]
    return str(value)


def _row_where(manifest: str, row: Row) -> str:
    """The URI of a manifest row itself (names a row without a path): ``{canonical manifest}#{line|row}={number}``."""
    return f"{canonical_uri(manifest)}#{row.where}={row.number}"


def _manifest_base(manifest: str) -> str:
    return posixpath.dirname(manifest) if is_remote(manifest) else os.path.dirname(os.path.abspath(manifest))


def list_manifest(manifest: str, fmt: str) -> Iterator[Source]:
    """One Source per row of a manifest in format ``fmt`` (:func:`n2m.manifest.iter_rows`; it needs a ``path`` or
    ``url`` column); a row the reader could not use, or one without a path, becomes a failed source. Surplus cells of
    a CSV row go to ``meta["_extra"]``."""
    base = _manifest_base(manifest)
    for row in iter_rows(manifest, fmt, need_any=PATH_COLUMNS):
        where = _row_where(manifest, row)
        yield Source(where, error=row.error) if row.values is None else _row_source(row.values, base, where)
