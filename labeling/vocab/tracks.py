"""Track metadata for vocabulary generation, read from a build's ``sources.parquet`` or a manifest (CSV, TSV, JSONL, Parquet).

A build's ``sources.parquet`` (``n2m.schema.SOURCES_SCHEMA``) keeps the manifest columns of each source in ``meta_json``;
only rows with status ``ok`` are used. A manifest is any table with at least one of the ``title``/``artist``/``tags``
columns (``n2m synth``'s ``manifest.jsonl`` is one). A bad row is skipped and counted by reason; it never stops the job.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from n2m.errors import UserError

META_COLUMNS = ("title", "artist", "tags")
ID_COLUMNS = ("source_id", "track_id", "id", "path", "uri", "url")
_TAG_SPLIT = re.compile(r"\s*[,;|]\s*")


@dataclass(frozen=True)
class Track:
    """One track's metadata. ``meta`` holds every manifest field (including title/artist/tags) as read."""

    track_id: str
    title: str
    artist: str
    tags: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class TrackSet:
    """The tracks read from one input, with the rows skipped by reason (``status_failed``, ``no_metadata``, ...)."""

    path: str
    format: str
    tracks: list[Track]
    skipped: Counter


def as_list(value: Any) -> list[str]:
    """A tags/instruments field as a list of non-empty strings: lists stay lists, strings split on ``, ; |``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return as_list(parsed)
    return [part for part in _TAG_SPLIT.split(text) if part]


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return " ".join(str(value).split())


def _track(meta: dict[str, Any], fallback_id: str) -> Track | None:
    title, artist, tags = _text(meta.get("title")), _text(meta.get("artist")), tuple(as_list(meta.get("tags")))
    if not (title or artist or tags):
        return None
    track_id = next((_text(meta[c]) for c in ID_COLUMNS if _text(meta.get(c))), fallback_id)
    return Track(track_id=track_id, title=title, artist=artist, tags=tags, meta=dict(meta))


# ---------------------------------------------------------------------------------------------------------------------
# Readers: each yields (row dict | None for an unreadable row, fallback id, skip reason or "")


def _rows_jsonl(path: Path):
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                yield None, f"line-{number:06d}", "bad_row"
                continue
            yield (row, f"line-{number:06d}", "") if isinstance(row, dict) else (None, "", "bad_row")


def _rows_csv(path: Path, delimiter: str):
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle, delimiter=delimiter), start=1):
            if None in row:  # more cells than header columns
                yield None, "", "bad_row"
                continue
            yield row, f"row-{number:06d}", ""


def _rows_parquet(path: Path):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    if {"meta_json", "status", "source_id"} <= set(table.column_names):
        for row in table.to_pylist():
            if row["status"] != "ok":
                yield None, "", f"status_{row['status']}"
                continue
            try:
                meta = json.loads(row["meta_json"] or "{}")
            except json.JSONDecodeError:
                yield None, "", "bad_row"
                continue
            if not isinstance(meta, dict):
                yield None, "", "bad_row"
                continue
            yield {**meta, "source_id": row["source_id"]}, row["source_id"], ""
        return
    for number, row in enumerate(table.to_pylist(), start=1):
        yield row, f"row-{number:06d}", ""


_READERS = {
    ".jsonl": ("jsonl", _rows_jsonl),
    ".json": ("jsonl", _rows_jsonl),
    ".csv": ("csv", lambda p: _rows_csv(p, ",")),
    ".tsv": ("tsv", lambda p: _rows_csv(p, "\t")),
    ".parquet": ("parquet", _rows_parquet),
}


def _columns(path: Path, fmt: str) -> set[str] | None:
    """Column names of a table-shaped input (``None`` for JSONL, whose rows may differ)."""
    if fmt in ("csv", "tsv"):
        with path.open(encoding="utf-8", newline="") as handle:
            return set(next(csv.reader(handle, delimiter="\t" if fmt == "tsv" else ","), []))
    if fmt == "parquet":
        import pyarrow.parquet as pq

        names = set(pq.read_schema(path).names)
        return None if "meta_json" in names else names
    return None


def read_tracks(path: str, *, exclude_holdout: bool = False, max_tracks: int | None = None) -> TrackSet:
    """Read the tracks of ``path`` in file order. ``max_tracks`` keeps the first N usable tracks."""
    source = Path(path)
    if not source.is_file():
        raise UserError(f"--from {path}: no such file")
    suffix = source.suffix.lower()
    if suffix not in _READERS:
        raise UserError(f"--from {path}: unknown input type {suffix!r} (use {', '.join(sorted(_READERS))})")
    fmt, reader = _READERS[suffix]
    tracks: list[Track] = []
    skipped: Counter = Counter()
    try:
        columns = _columns(source, fmt)
        if columns is not None and not columns & set(META_COLUMNS):
            raise UserError(f"--from {path}: the table has none of the columns {', '.join(META_COLUMNS)}")
        for row, fallback_id, reason in reader(source):
            if max_tracks is not None and len(tracks) >= max_tracks:
                break
            if row is None:
                skipped[reason] += 1
                continue
            if exclude_holdout and str(row.get("holdout", "")).lower() in ("true", "1", "yes"):
                skipped["holdout"] += 1
                continue
            track = _track(row, fallback_id)
            if track is None:
                skipped["no_metadata"] += 1
                continue
            tracks.append(track)
    except (UnicodeDecodeError, csv.Error, OSError, pa.ArrowException) as err:
        raise UserError(f"--from {path}: cannot read it as {fmt}: {err}") from err
    return TrackSet(path=str(source), format=fmt, tracks=tracks, skipped=skipped)
