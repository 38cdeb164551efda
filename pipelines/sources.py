"""Listing the inputs of a build: a directory (recursive), a glob, a manifest (CSV/TSV, JSONL or Parquet) or one file.

Every listed entry becomes a :class:`Source` with a canonical URI and ``source_id = sha1(canonical URI)[:16]``
(``n2m.schema.source_id``). Listing streams: a directory is walked one sorted folder at a time and a manifest is read
row by row (Parquet batch by batch), so a million-row input never sits in memory. The order is deterministic, which
is what makes shard planning (``pipelines.shards``) stable across re-runs.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import posixpath
import stat
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
LISTING_REASONS = (
    "bad_manifest_row",  # a manifest row without a usable path, malformed JSON/CSV, a key given twice
    "bad_file_name",  # a file or folder name that is not valid UTF-8 (it cannot be stored or shared)
    "symlink_loop",  # ELOOP, or a link back to a folder being walked
    "not_a_file",  # a FIFO, device or socket named like audio
    "listing_error",  # another error while listing a folder (e.g. permission denied)
)
_GLOB_CHARS = "*?["
_CSV_FIELD_LIMIT = 1 << 26  # characters per CSV field (Python's default of 131072 rejects long captions)
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Source:
    """One input: ``uri`` is canonical; ``meta`` holds the manifest's other columns; ``text`` its captions.

    ``error`` is set for an entry the listing could not use (a manifest row without a usable path, a symlink loop, a
    name that is not UTF-8...): it becomes a failed source with ``reason`` (one of :data:`LISTING_REASONS`), never a
    crash. ``notes`` say what the listing changed in the entry (a NaN stored as null...); they reach the source's
    ``message`` in sources.parquet.
    """

    uri: str
    meta: dict[str, Any] = field(default_factory=dict)
    text: tuple[str, ...] = ()
    error: str = ""
    reason: str = ""
    notes: tuple[str, ...] = ()

    @property
    def source_id(self) -> str:
        return source_id(self.uri)

    def to_json(self) -> dict[str, Any]:
        """JSON form (part of a shard's spec hash: ``reason`` and ``notes`` appear only when set, so the specs of
        earlier builds keep their hashes)."""
        obj = {"uri": self.uri, "meta": self.meta, "text": list(self.text), "error": self.error}
        if self.reason:
            obj["reason"] = self.reason
        if self.notes:
            obj["notes"] = list(self.notes)
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Source:
        return cls(obj["uri"], obj.get("meta") or {}, tuple(obj.get("text") or ()), obj.get("error", ""),
                   obj.get("reason", ""), tuple(obj.get("notes") or ()))


@dataclass
class ListingStats:
    """What the listing saw besides sources: files skipped by extension, URIs listed more than once, and per source id
    how many of its repeats had other captions or metadata (``conflicts``; the first listing is kept)."""

    skipped_files: int = 0
    repeated_uris: int = 0
    conflicts: dict[str, int] = field(default_factory=dict)

    def conflict_notes(self) -> dict[str, str]:
        """source id -> the note recorded in its sources.parquet message."""
        return {sid: f"listed {n} more time{'s' * (n > 1)} with other captions or metadata; the first listing is kept"
                for sid, n in self.conflicts.items()}


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


def _printable(path: str) -> str:
    """A path whose name is not UTF-8 (``os`` gives its bytes as surrogates) with those bytes as ``\\xNN``."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _failed_entry(path: str, reason: str, message: str) -> Source:
    printable = _printable(path)
    return Source(printable, error=f"{printable}: {message}", reason=reason)


def _os_failure(path: str, err: OSError) -> Source:
    reason = "symlink_loop" if err.errno == errno.ELOOP else "listing_error"
    return _failed_entry(path, reason, err.strerror or str(err))


def _local_file(path: str, mode: int) -> Source:
    """A listed local entry that is not a folder: a source, or a failed entry when it is not a regular file or its
    name is not UTF-8."""
    if not _is_utf8(path):
        return _failed_entry(path, "bad_file_name", "the name is not valid UTF-8 (rename the file)")
    if not stat.S_ISREG(mode):
        return _failed_entry(path, "not_a_file", "not a regular file (a FIFO, device or socket)")
    return Source(path)


def _walk_local(root: str, extensions: tuple[str, ...], exclude: tuple[str, ...], stats: ListingStats,
                ancestors: tuple[tuple[int, int], ...] = ()) -> Iterator[Source]:
    """Sorted recursive walk, one folder in memory at a time; hidden entries and ``exclude`` folders are skipped.

    An entry that cannot be used (a symlink loop, a link back to a folder being walked, a name that is not UTF-8, a
    FIFO or device with an audio extension, a sub-folder that cannot be read) becomes a failed source and the walk
    goes on; only an unreadable ``root`` itself is a user error.
    """
    try:
        here = os.stat(root)
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as err:
        if not ancestors:
            raise UserError(f"cannot list {root}: {err.strerror}") from err
        yield _os_failure(root, err)
        return
    ancestors = (*ancestors, (here.st_dev, here.st_ino))
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = os.path.abspath(entry.path)
        try:
            info = entry.stat(follow_symlinks=True)
        except FileNotFoundError:  # a dangling link: listed by name, it fails as missing
            info = None
        except OSError as err:
            yield _os_failure(path, err)
            continue
        if info is not None and stat.S_ISDIR(info.st_mode):
            if (info.st_dev, info.st_ino) in ancestors:
                yield _failed_entry(path, "symlink_loop", "links back to a folder that contains it (not followed)")
            elif not _is_utf8(path):
                yield _failed_entry(path, "bad_file_name", "the folder name is not valid UTF-8 (not listed)")
            elif not any(path == ex or path.startswith(ex + os.sep) for ex in exclude):
                yield from _walk_local(path, extensions, exclude, stats, ancestors)
        elif not entry.name.lower().endswith(extensions):
            stats.skipped_files += 1
        else:
            yield Source(path) if info is None else _local_file(path, info.st_mode)


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
    yield from _walk_local(root, extensions, exclude, stats)


def list_glob(pattern: str, extensions: tuple[str, ...], exclude: tuple[str, ...], stats: ListingStats) -> Iterator[Source]:
    """Files matching a glob (``**`` recurses), sorted. The pattern picks files itself: no extension filter.

    Local matches get the checks of a folder listing (symlink loops, names that are not UTF-8, FIFOs and devices
    become failed entries); folders that match are skipped.
    """
    fs, path = fsspec.core.url_to_fs(pattern)
    for found in sorted(fs.glob(path)):
        if is_remote(pattern):
            if fs.isfile(found):
                yield Source(canonical_uri(fs.unstrip_protocol(found)))
            continue
        try:
            mode = os.stat(found).st_mode
        except FileNotFoundError:
            continue
        except OSError as err:
            yield _os_failure(found, err)
            continue
        if not stat.S_ISDIR(mode):
            source = _local_file(found, mode)
            yield source if source.error else Source(canonical_uri(found))


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
    with fsspec.open(manifest, "r", encoding="utf-8-sig", newline="") as handle:  # -sig: spreadsheet BOMs
        reader = csv.DictReader(handle, delimiter=delimiter)  # surplus cells land in meta["_extra"]
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
    """Parquet manifest, read one record batch at a time."""
    import pyarrow.parquet as pq

    base = _manifest_base(manifest)
    with fsspec.open(manifest, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        _check_columns(parquet.schema_arrow.names, manifest)
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
    """Which lister reads ``src``: a key of :data:`LISTERS`. Raises UserError when ``src`` is none of them.

    A path that exists is read as what it is, even when its name has glob characters (``dir_[x]``); only a
    ``src`` that does not exist and has ``*``, ``?`` or ``[`` is a glob.
    """
    suffix = Path(urlsplit(src).path).suffix.lower()
    fs, path = fsspec.core.url_to_fs(src)
    if not fs.exists(path):
        if any(c in src for c in _GLOB_CHARS):
            return "glob"
        raise UserError(f"input {src} does not exist")
    if fs.isdir(path):
        return "dir"
    if not is_remote(src) and not stat.S_ISREG(os.stat(path).st_mode):
        raise UserError(f"input {src} is not a regular file (a FIFO or device?)")
    if suffix in _MANIFEST_SUFFIXES:
        return _MANIFEST_SUFFIXES[suffix]
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
    (the first listing wins) and counted in ``stats.repeated_uris``; a repeat with other captions or metadata is also
    counted in ``stats.conflicts`` (the map of seen ids to fingerprints costs ~100 bytes per source).
    """
    stats = stats if stats is not None else ListingStats()
    kind = input_kind(src)
    exclude = tuple(os.path.abspath(e) for e in exclude if not is_remote(e))
    seen: dict[int, int] = {}  # id -> fingerprint of its metadata and captions
    for source in LISTERS[kind](src, tuple(e.lower() for e in extensions), exclude, stats):
        ident = int(source.source_id, 16)
        fingerprint = hash(json.dumps([source.meta, source.text], sort_keys=True)) if source.meta or source.text else 0
        first = seen.get(ident)
        if first is not None:
            stats.repeated_uris += 1
            if first != fingerprint:
                stats.conflicts[source.source_id] = stats.conflicts.get(source.source_id, 0) + 1
            continue
        seen[ident] = fingerprint
        yield source
