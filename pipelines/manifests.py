"""Manifest readers (CSV/TSV, JSON Lines, Parquet): one :class:`~pipelines.inputs.Source` per row, streamed.

A row names its audio in a ``path`` or ``url`` column (the first non-empty one); the other columns become the clip's
``meta`` and a caption column its ``text``. A row that cannot be used (no path, malformed JSON or CSV, a key given
twice, bytes that are not UTF-8 text) becomes a failed source, never a crash; a manifest without a path column, with a
column name twice, with a header that is not UTF-8, or a ``.parquet`` file Arrow cannot read, is a user error. Values
JSON cannot hold are changed and the change is noted in the source's ``notes``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import posixpath
import re
from collections.abc import Iterator
from typing import Any

import fsspec

from n2m.errors import UserError
from n2m.storage import is_remote
from pipelines.inputs import Source, canonical_uri

PATH_COLUMNS = ("path", "url")  # the first non-empty one names the source
CAPTION_COLUMNS = ("caption", "captions", "text")  # copied (as a list) into each clip's ``text``
_CSV_FIELD_LIMIT = 1 << 26  # characters per CSV field (Python's default of 131072 rejects long captions)
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # a byte that is not UTF-8, as errors="surrogateescape" reads it


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


def _not_utf8(values: Any) -> str:
    """``"not UTF-8 text (byte 0x..)"`` for the first undecodable byte in ``values`` (text read with
    ``errors="surrogateescape"``, which keeps byte ``b`` as the code point U+DC00 + b; PEP 383), else ``""``."""
    for value in values:
        texts = value if isinstance(value, list) else [value]
        for text in texts:
            found = _ESCAPED_BYTE.search(text) if isinstance(text, str) else None
            if found:
                return f"not UTF-8 text (byte 0x{ord(found.group()) - 0xDC00:02x})"
    return ""


def _row_where(manifest: str, kind: str, number: int) -> str:
    """The URI of a manifest row itself (names a row without a path): ``{canonical manifest}#{kind}={number}``."""
    return f"{canonical_uri(manifest)}#{kind}={number}"


def _manifest_base(manifest: str) -> str:
    return posixpath.dirname(manifest) if is_remote(manifest) else os.path.dirname(os.path.abspath(manifest))


def _check_columns(columns: list[str] | None, manifest: str) -> None:
    """A manifest needs a path or url column, and no column name twice (which value would count?)."""
    if columns is None:
        return
    if not any(c in columns for c in PATH_COLUMNS):
        raise UserError(f"manifest {manifest} needs a {' or '.join(PATH_COLUMNS)} column (has: {', '.join(columns)})")
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise UserError(f"manifest {manifest} has the column(s) {', '.join(map(repr, twice))} more than once")


def _read_delimited(manifest: str, delimiter: str) -> Iterator[Source]:
    """Rows of a CSV/TSV manifest; a row the csv module cannot parse becomes a failed source and reading goes on."""
    base = _manifest_base(manifest)
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    with fsspec.open(manifest, "r", encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)  # -sig: spreadsheet BOMs; surplus cells: meta["_extra"]
        bad_header = _not_utf8(reader.fieldnames or [])
        if bad_header:
            raise UserError(f"manifest {manifest}: its header is {bad_header}; save it as UTF-8")
        _check_columns(reader.fieldnames or [], manifest)
        number = 1
        while True:
            number += 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield Source(_row_where(manifest, "line", number), error=f"malformed row: {err}")
                continue
            bad = _not_utf8(row.values())
            if bad:
                yield Source(_row_where(manifest, "line", number), error=bad)
                continue
            yield _row_source(row, base, _row_where(manifest, "line", number))


def list_csv(manifest: str, *_: Any) -> Iterator[Source]:
    """CSV manifest with a ``path`` or ``url`` column; the other columns become clip metadata."""
    return _read_delimited(manifest, ",")


def list_tsv(manifest: str, *_: Any) -> Iterator[Source]:
    """Tab-separated manifest, as :func:`list_csv`."""
    return _read_delimited(manifest, "\t")


def list_jsonl(manifest: str, *_: Any) -> Iterator[Source]:
    """JSON Lines manifest (one object per line); a malformed line becomes a failed source, not a crash."""
    base = _manifest_base(manifest)
    with fsspec.open(manifest, "r", encoding="utf-8", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = _row_where(manifest, "line", number)
            bad = _not_utf8([line])
            if bad:
                yield Source(where, error=bad)
                continue
            try:
                row = json.loads(line, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as err:
                yield Source(where, error=f"not JSON: {err.msg}")
                continue
            except ValueError as err:
                yield Source(where, error=str(err))
                continue
            if not isinstance(row, dict):
                yield Source(where, error="line is not a JSON object")
                continue
            yield _row_source(row, base, where)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"the key(s) {', '.join(map(repr, twice))} appear more than once")
    return dict(pairs)


def list_parquet(manifest: str, *_: Any) -> Iterator[Source]:
    """Parquet manifest, read one record batch at a time. A file Arrow cannot read (not Parquet, or damaged) is a
    one-line :class:`UserError`: which of its rows are lost cannot be told."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = _manifest_base(manifest)
    number = 0
    try:
        with fsspec.open(manifest, "rb") as handle:
            parquet = pq.ParquetFile(handle)
            _check_columns(parquet.schema_arrow.names, manifest)
            for batch in parquet.iter_batches(batch_size=1024):
                for row in batch.to_pylist():
                    number += 1
                    yield _row_source(row, base, _row_where(manifest, "row", number))
    except pa.ArrowException as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"manifest {manifest} is not a Parquet file Arrow can read (after {number} rows): "
                        f"{first}") from err
