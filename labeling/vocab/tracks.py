"""Track metadata for vocabulary generation, read from a build's ``sources.parquet`` or a manifest (CSV, TSV, JSONL,
Parquet; :mod:`n2m.manifest`).

A build's ``sources.parquet`` (``n2m.schema.SOURCES_SCHEMA``) keeps the manifest columns of each source in ``meta_json``;
only rows with status ``ok`` are used. A manifest is any table with at least one of the ``title``/``artist``/``tags``
columns (``n2m synth``'s ``manifest.jsonl`` is one). A bad row is skipped and counted by reason; it never stops the job.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from n2m.errors import UserError
from n2m.manifest import FORMATS, is_holdout, iter_rows, manifest_format

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


def _rows_sources_table(path: str) -> Iterator[tuple[dict[str, Any] | None, str, str]]:
    """A build's ``sources.parquet``: the manifest columns (``meta_json``) of each ``ok`` source, with its id."""
    import pyarrow.parquet as pq

    for row in pq.read_table(path, columns=["source_id", "status", "meta_json"]).to_pylist():
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


def _rows_manifest(path: str, fmt: str) -> Iterator[tuple[dict[str, Any] | None, str, str]]:
    """A manifest (:func:`n2m.manifest.iter_rows`); an unreadable row, or a CSV row with more cells than columns, is a
    ``bad_row``. Fallback ids: ``line-NNNNNN`` (JSON Lines line), ``row-NNNNNN`` (CSV data row or Parquet row)."""
    for row in iter_rows(path, fmt, need_any=META_COLUMNS):
        if row.values is None or None in row.values:
            yield None, "", "bad_row"
            continue
        number = row.number - 1 if fmt in ("csv", "tsv") else row.number  # CSV: line 1 is the header
        yield row.values, f"{'line' if fmt == 'jsonl' else 'row'}-{number:06d}", ""


def _is_sources_table(path: str) -> bool:
    import pyarrow.parquet as pq

    return {"meta_json", "status", "source_id"} <= set(pq.read_schema(path).names)


def read_tracks(path: str, *, exclude_holdout: bool = False, max_tracks: int | None = None) -> TrackSet:
    """Read the tracks of ``path`` in file order. ``max_tracks`` keeps the first N usable tracks."""
    source = Path(path)
    if not source.is_file():
        raise UserError(f"--from {path}: no such file")
    fmt = manifest_format(path)
    if fmt is None:
        raise UserError(f"--from {path}: unknown input type {source.suffix.lower()!r} "
                        f"(use {', '.join(sorted(FORMATS))})")
    tracks: list[Track] = []
    skipped: Counter = Counter()
    try:
        rows = _rows_sources_table(path) if fmt == "parquet" and _is_sources_table(path) else _rows_manifest(path, fmt)
        for row, fallback_id, reason in rows:
            if max_tracks is not None and len(tracks) >= max_tracks:
                break
            if row is None:
                skipped[reason] += 1
                continue
            if exclude_holdout and is_holdout(row):
                skipped["holdout"] += 1
                continue
            track = _track(row, fallback_id)
            if track is None:
                skipped["no_metadata"] += 1
                continue
            tracks.append(track)
    except pa.ArrowException as err:
        raise UserError(f"--from {path}: cannot read it as {fmt}: {err}") from err
    return TrackSet(path=str(source), format=fmt, tracks=tracks, skipped=skipped)
