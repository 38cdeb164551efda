"""Listing the inputs of a build: a directory (recursive), a glob, a manifest (CSV/TSV, JSONL or Parquet) or one file.

Every listed entry becomes a :class:`Source` with a canonical URI and ``source_id = sha1(canonical URI)[:16]``
(``n2m.schema.source_id``). Listing streams: a directory is walked one sorted folder at a time and a manifest is read
row by row (Parquet batch by batch), so a million-row input never sits in memory. The order is deterministic, which
is what makes shard planning (``pipelines.shards``) stable across re-runs.
"""

from __future__ import annotations

import csv
import json
import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import fsspec

from n2m.errors import UserError
from n2m.schema import source_id

AUDIO_EXTENSIONS = (".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac", ".aif",
                    ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64", ".wma", ".webm", ".mka", ".mkv")
PATH_COLUMNS = ("path", "url")  # the first non-empty one names the source
CAPTION_COLUMNS = ("caption", "captions", "text")  # copied (as a list) into each clip's ``text``
_GLOB_CHARS = "*?["
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Source:
    """One input: ``uri`` is canonical; ``meta`` holds the manifest's other columns; ``text`` its captions.

    ``error`` is set for a manifest row that names no usable path (it becomes a failed source, never a crash).
    """

    uri: str
    meta: dict[str, Any] = field(default_factory=dict)
    text: tuple[str, ...] = ()
    error: str = ""

    @property
    def source_id(self) -> str:
        return source_id(self.uri)

    def to_json(self) -> dict[str, Any]:
        return {"uri": self.uri, "meta": self.meta, "text": list(self.text), "error": self.error}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Source:
        return cls(obj["uri"], obj.get("meta") or {}, tuple(obj.get("text") or ()), obj.get("error", ""))


@dataclass
class ListingStats:
    """What the listing saw besides sources: files skipped by extension, URIs listed more than once."""

    skipped_files: int = 0
    repeated_uris: int = 0


# ---------------------------------------------------------------------------------------------------------------------
# Canonical URIs


def is_remote(uri: str) -> bool:
    """True for ``scheme://`` URIs (http, s3, gs, ...); False for local paths and ``file://``."""
    scheme = urlsplit(uri).scheme.lower()
    return len(scheme) > 1 and scheme != "file"


def canonical_uri(raw: str, base: str | None = None) -> str:
    """The canonical form of a path or URI, resolved against ``base`` (a folder path or URI) when relative.

    Local paths become absolute and normalised (``file://`` stripped); http(s) URLs get a lower-case scheme and host,
    no default port and no fragment; other URIs keep their text with a lower-case scheme.
    """
    raw = raw.strip()
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return os.path.abspath(unquote(parts.path))
    if len(scheme) <= 1:  # no scheme (or a Windows drive letter)
        if base is not None and not os.path.isabs(raw):
            if is_remote(base):
                return canonical_uri(posixpath.join(base.rstrip("/"), raw))
            raw = os.path.join(base, raw)
        return os.path.abspath(os.path.expanduser(raw))
    if scheme in _DEFAULT_PORTS:
        host = (parts.hostname or "").lower()
        if parts.port and parts.port != _DEFAULT_PORTS[scheme]:
            host = f"{host}:{parts.port}"
        if parts.username:
            host = f"{parts.username}{':' + parts.password if parts.password else ''}@{host}"
        return urlunsplit((scheme, host, parts.path or "/", parts.query, ""))
    return scheme + raw[len(scheme):]


# ---------------------------------------------------------------------------------------------------------------------
# Listers (one per kind of input)


def _walk_local(root: str, extensions: tuple[str, ...], exclude: tuple[str, ...], stats: ListingStats) -> Iterator[str]:
    """Sorted recursive walk, one folder in memory at a time; hidden entries and ``exclude`` folders are skipped."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as err:
        raise UserError(f"cannot list {root}: {err.strerror}") from err
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = os.path.abspath(entry.path)
        if entry.is_dir(follow_symlinks=True):
            if not any(path == ex or path.startswith(ex + os.sep) for ex in exclude):
                yield from _walk_local(path, extensions, exclude, stats)
        elif entry.name.lower().endswith(extensions):
            yield path
        else:
            stats.skipped_files += 1


def list_directory(root: str, extensions: tuple[str, ...], exclude: tuple[str, ...], stats: ListingStats) -> Iterator[Source]:
    """Every file under ``root`` whose name ends with one of ``extensions``, in sorted path order."""
    if is_remote(root):
        fs, path = fsspec.core.url_to_fs(root)
        for found in sorted(fs.find(path)):
            if found.lower().endswith(extensions):
                yield Source(canonical_uri(fs.unstrip_protocol(found)))
            else:
                stats.skipped_files += 1
        return
    for path in _walk_local(root, extensions, exclude, stats):
        yield Source(path)


def list_glob(pattern: str, extensions: tuple[str, ...], exclude: tuple[str, ...], stats: ListingStats) -> Iterator[Source]:
    """Files matching a glob (``**`` recurses), sorted. The pattern picks files itself: no extension filter."""
    fs, path = fsspec.core.url_to_fs(pattern)
    matches = fs.glob(path)
    for found in sorted(matches):
        if fs.isfile(found):
            yield Source(canonical_uri(fs.unstrip_protocol(found) if is_remote(pattern) else found))


def _row_source(row: dict[str, Any], base: str, where: str) -> Source:
    """A manifest row -> Source; a row without a usable path becomes a Source carrying ``error``."""
    raw = next((row[c] for c in PATH_COLUMNS if isinstance(row.get(c), str) and row[c].strip()), None)
    meta = {("_extra" if k is None else str(k)): _json_safe(v) for k, v in row.items() if k not in PATH_COLUMNS}
    text = _captions(row)
    if raw is None:
        return Source(where, meta, text, f"row has no {' or '.join(PATH_COLUMNS)} value")
    return Source(canonical_uri(raw, base), meta, text)


def _captions(row: dict[str, Any]) -> tuple[str, ...]:
    for column in CAPTION_COLUMNS:
        value = row.get(column)
        if isinstance(value, str) and value.strip():
            return (value.strip(),)
        if isinstance(value, list | tuple):
            return tuple(str(v).strip() for v in value if str(v).strip())
    return ()


def _json_safe(value: Any) -> Any:
    """Manifest values as JSON types (dates and decimals from Parquet become strings)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return str(value)


def _row_where(manifest: str, kind: str, number: int) -> str:
    """The URI of a manifest row itself (names a row without a path): ``{canonical manifest}#{kind}={number}``."""
    return f"{canonical_uri(manifest)}#{kind}={number}"


def _manifest_base(manifest: str) -> str:
    return posixpath.dirname(manifest) if is_remote(manifest) else os.path.dirname(os.path.abspath(manifest))


def _require_path_column(columns: list[str] | None, manifest: str) -> None:
    if columns is not None and not any(c in columns for c in PATH_COLUMNS):
        raise UserError(f"manifest {manifest} needs a {' or '.join(PATH_COLUMNS)} column (has: {', '.join(columns)})")


def _read_delimited(manifest: str, delimiter: str) -> Iterator[Source]:
    base = _manifest_base(manifest)
    with fsspec.open(manifest, "r", encoding="utf-8-sig", newline="") as handle:  # -sig: spreadsheet BOMs
        reader = csv.DictReader(handle, delimiter=delimiter)  # surplus cells land in meta["_extra"]
        _require_path_column(reader.fieldnames or [], manifest)
        for number, row in enumerate(reader, start=2):
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
    with fsspec.open(manifest, "r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = _row_where(manifest, "line", number)
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield Source(where, error=f"not JSON: {err.msg}")
                continue
            if not isinstance(row, dict):
                yield Source(where, error="line is not a JSON object")
                continue
            yield _row_source(row, base, where)


def list_parquet(manifest: str, *_: Any) -> Iterator[Source]:
    """Parquet manifest, read one record batch at a time."""
    import pyarrow.parquet as pq

    base = _manifest_base(manifest)
    with fsspec.open(manifest, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        _require_path_column(parquet.schema_arrow.names, manifest)
        number = 0
        for batch in parquet.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                yield _row_source(row, base, _row_where(manifest, "row", number))


def list_file(path: str, *_: Any) -> Iterator[Source]:
    """A single audio file."""
    yield Source(canonical_uri(path))


Lister = Callable[[str, tuple[str, ...], tuple[str, ...], ListingStats], Iterator[Source]]
LISTERS: dict[str, Lister] = {
    "dir": list_directory,
    "glob": list_glob,
    "csv": list_csv,
    "tsv": list_tsv,
    "jsonl": list_jsonl,
    "parquet": list_parquet,
    "file": list_file,
}
_MANIFEST_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


def input_kind(src: str) -> str:
    """Which lister reads ``src``: a key of :data:`LISTERS`. Raises UserError when ``src`` is none of them."""
    if any(c in src for c in _GLOB_CHARS):
        return "glob"
    suffix = Path(urlsplit(src).path).suffix.lower()
    if suffix in _MANIFEST_SUFFIXES:
        kind = _MANIFEST_SUFFIXES[suffix]
    else:
        kind = ""
    fs, path = fsspec.core.url_to_fs(src)
    if not fs.exists(path):
        raise UserError(f"input {src} does not exist")
    if fs.isdir(path):
        return "dir"
    if kind:
        return kind
    if suffix in AUDIO_EXTENSIONS:
        return "file"
    raise UserError(f"input {src} is not a folder, a glob, an audio file or a manifest ({', '.join(_MANIFEST_SUFFIXES)})")


def iter_sources(
    src: str,
    *,
    extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
    exclude: tuple[str, ...] = (),
    stats: ListingStats | None = None,
) -> Iterator[Source]:
    """Stream the sources of ``src`` in a deterministic order, each canonical URI once.

    ``exclude`` lists local folders never to descend into (the build's own output). A URI seen twice is yielded once
    and counted in ``stats.repeated_uris`` (the set of seen ids costs ~70 bytes per source).
    """
    stats = stats if stats is not None else ListingStats()
    kind = input_kind(src)
    exclude = tuple(os.path.abspath(e) for e in exclude if not is_remote(e))
    seen: set[int] = set()
    for source in LISTERS[kind](src, tuple(e.lower() for e in extensions), exclude, stats):
        ident = int(source.source_id, 16)
        if ident in seen:
            stats.repeated_uris += 1
            continue
        seen.add(ident)
        yield source
