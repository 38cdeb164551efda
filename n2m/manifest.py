"""Manifests: tables with one row per track or source, as CSV/TSV, JSON Lines or Parquet, local or behind an fsspec
URI -- the one reader every job uses (the build's source listing, vocabulary tracks, ground truth, evaluation prompts,
the synthetic corpus' ``manifest.jsonl``) and the one rule for a held-out row (:func:`is_holdout`).

Rows stream: CSV and JSON Lines one line at a time, Parquet one record batch at a time. :func:`iter_rows` never stops
at a bad row: a row that cannot be read (malformed CSV or JSON, a key given twice, bytes that are not UTF-8, a line
that is not an object) comes back as a :class:`Row` carrying ``error``, so the caller records it and goes on. Problems
of the whole file (missing, a header that is not UTF-8, a column name twice, none of the required columns, a Parquet
file Arrow cannot read) are one-line :class:`~n2m.errors.UserError`\\ s. :func:`read_rows` is the strict form for small
inputs: the first bad row is a user error naming its line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from n2m.errors import UserError
from n2m.storage import Store

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
TRUE_WORDS = ("true", "1", "yes")
_CSV_FIELD_LIMIT = 1 << 26  # characters per CSV field (Python's default of 131072 rejects long captions)
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # a byte that is not UTF-8, as errors="surrogateescape" reads it
_PARQUET_BATCH = 1024


@dataclass(frozen=True)
class Row:
    """One row: ``values`` (column -> value; a CSV row with more cells than header columns has the surplus under the
    key ``None``, as :class:`csv.DictReader` gives it), or ``values=None`` and ``error`` saying why it is unusable.
    ``where`` is ``"line"`` (CSV/TSV: the header is line 1 and each record counts one; JSON Lines: the line number)
    or ``"row"`` (Parquet, from 1)."""

    where: str
    number: int
    values: dict[Any, Any] | None
    error: str = ""


def manifest_format(path: str | os.PathLike) -> str | None:
    """``csv``, ``tsv``, ``jsonl`` or ``parquet`` from the file name's suffix (:data:`FORMATS`); None for another."""
    return FORMATS.get(PurePosixPath(urlsplit(str(path)).path).suffix.lower())


def is_holdout(row: Mapping[str, Any]) -> bool:
    """Whether a manifest row is held out: its ``holdout`` column is ``True`` or the text ``true``, ``1`` or ``yes``
    (any case, as CSV cells carry it). n2m synth writes the column; held-out tracks stay out of vocabularies, CLAP
    training and (with ``--exclude-holdout``) a stage's training, and evaluation uses them."""
    value = row.get("holdout", False)
    return value is True or str(value).strip().lower() in TRUE_WORDS


def clip_is_holdout(clip_json: Mapping[str, Any]) -> bool:
    """:func:`is_holdout` for a shard's ``{key}.json``: n2m build carries the manifest row's columns in its ``meta``."""
    return is_holdout(clip_json.get("meta") or {})


def iter_rows(path: str | os.PathLike, fmt: str | None = None, need_any: Sequence[str] = ()) -> Iterator[Row]:
    """Stream the rows of a manifest. ``fmt`` defaults to :func:`manifest_format`, and a name without a known suffix
    is read as JSON Lines (the prompt files of n2m sample and n2m eval). ``need_any``: a CSV/TSV/Parquet manifest must
    have at least one of these columns (JSON Lines rows may differ; the caller checks each)."""
    path = str(path)
    fmt = fmt or manifest_format(path) or "jsonl"
    store = Store(path)
    if not store.exists(path):
        raise UserError(f"manifest {path}: no such file")
    try:
        yield from _READERS[fmt](store, path, need_any)
    except OSError as err:
        raise UserError(f"manifest {path}: cannot read it ({err.strerror or err})") from err


def read_rows(path: str | os.PathLike, fmt: str | None = None, need_any: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every row of a manifest as a dict (:func:`iter_rows`); the first unusable row is a :class:`UserError`."""
    rows = []
    for row in iter_rows(path, fmt, need_any):
        if row.values is None:
            raise UserError(f"manifest {path}: {row.where} {row.number}: {row.error}")
        rows.append(row.values)
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# Readers, one per format: (store, path, need_any) -> rows


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


def _check_columns(columns: list[str], path: str, need_any: Sequence[str]) -> None:
    """No column name twice (which value would count?), and at least one of ``need_any``."""
    twice = sorted({c for c in columns if columns.count(c) > 1})
    if twice:
        raise UserError(f"manifest {path} has the column(s) {', '.join(map(repr, twice))} more than once")
    if need_any and not any(c in columns for c in need_any):
        raise UserError(f"manifest {path} needs a {' or '.join(need_any)} column (has: {', '.join(columns)})")


def _open_text(store: Store, path: str, encoding: str = "utf-8", newline: str | None = None) -> io.TextIOWrapper:
    """``path`` as text: UTF-8 with undecodable bytes kept as surrogates (see :func:`_not_utf8`)."""
    return io.TextIOWrapper(store.open_read(path), encoding=encoding, errors="surrogateescape", newline=newline)


def _delimited(delimiter: str):
    def read(store: Store, path: str, need_any: Sequence[str]) -> Iterator[Row]:
        """CSV/TSV; a record the csv module cannot parse becomes a failed row and reading goes on."""
        csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
        with _open_text(store, path, encoding="utf-8-sig", newline="") as handle:  # -sig: spreadsheet BOMs
            reader = csv.DictReader(handle, delimiter=delimiter)
            bad_header = _not_utf8(reader.fieldnames or [])
            if bad_header:
                raise UserError(f"manifest {path}: its header is {bad_header}; save it as UTF-8")
            _check_columns(list(reader.fieldnames or []), path, need_any)
            number = 1
            while True:
                number += 1
                try:
                    values = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    yield Row("line", number, None, f"malformed row: {err}")
                    continue
                bad = _not_utf8(values.values())
                yield Row("line", number, None, bad) if bad else Row("line", number, values)

    return read


def _jsonl(store: Store, path: str, need_any: Sequence[str]) -> Iterator[Row]:
    """JSON Lines (one object per line; blank lines are skipped but counted)."""
    with _open_text(store, path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            bad = _not_utf8([line])
            if bad:
                yield Row("line", number, None, bad)
                continue
            try:
                values = json.loads(line, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as err:
                yield Row("line", number, None, f"not JSON: {err.msg}")
                continue
            except ValueError as err:
                yield Row("line", number, None, str(err))
                continue
            if not isinstance(values, dict):
                yield Row("line", number, None, "line is not a JSON object")
                continue
            yield Row("line", number, values)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ValueError(f"the key(s) {', '.join(map(repr, twice))} appear more than once")
    return dict(pairs)


def _parquet(store: Store, path: str, need_any: Sequence[str]) -> Iterator[Row]:
    """Parquet, one record batch at a time. A file Arrow cannot read (not Parquet, or damaged) is a user error: which
    of its rows are lost cannot be told."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    number = 0
    try:
        with store.open_read(path) as handle:
            parquet = pq.ParquetFile(handle)
            _check_columns(parquet.schema_arrow.names, path, need_any)
            for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH):
                for values in batch.to_pylist():
                    number += 1
                    yield Row("row", number, values)
    except pa.ArrowException as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"manifest {path} is not a Parquet file Arrow can read (after {number} rows): "
                        f"{first}") from err


_READERS = {"csv": _delimited(","), "tsv": _delimited("\t"), "jsonl": _jsonl, "parquet": _parquet}
