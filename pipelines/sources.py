"""Listing the inputs of a build: a directory (recursive), a glob, a manifest (CSV/TSV, JSONL or Parquet) or one file.

Every listed entry becomes a :class:`~n2m.pipelines.inputs.Source` with a canonical URI and ``source_id =
sha1(canonical URI)[:16]`` (``n2m.schema.source_id``). Listing streams: a directory is walked one sorted folder at a
time and a manifest is read row by row (Parquet batch by batch, ``n2m.pipelines.manifests``), so a million-row input never
sits in memory. The order is deterministic, which is what makes shard planning (``n2m.pipelines.shards``) stable across
re-runs. An entry that cannot be used becomes a failed source with a reason (``LISTING_REASONS``), never a crash.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fsspec

from n2m.errors import UserError
from n2m.manifest import FORMATS as MANIFEST_FORMATS
from n2m.pipelines.inputs import LISTING_REASONS, ListingStats, Source, canonical_uri
from n2m.pipelines.manifests import CAPTION_COLUMNS, PATH_COLUMNS, list_manifest
from n2m.storage import is_remote

__all__ = ["AUDIO_EXTENSIONS", "CAPTION_COLUMNS", "LISTERS", "LISTING_REASONS", "PATH_COLUMNS", "ListingStats",
           "Source", "canonical_uri", "input_kind", "iter_sources"]

AUDIO_EXTENSIONS = (".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac", ".aif",
                    ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64", ".wma", ".webm", ".mka", ".mkv")
_GLOB_CHARS = "*?["


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
            if entry.is_file(follow_symlinks=False):  # the folder listing says so: no system call
                mode, ident = stat.S_IFREG, None
            else:
                info = entry.stat(follow_symlinks=True)
                mode, ident = info.st_mode, (info.st_dev, info.st_ino)
        except FileNotFoundError:  # a dangling link: listed by name, it fails as missing
            mode, ident = stat.S_IFREG, None
        except OSError as err:
            yield _os_failure(path, err)
            continue
        if stat.S_ISDIR(mode):
            if ident in ancestors:
                yield _failed_entry(path, "symlink_loop", "links back to a folder that contains it (not followed)")
            elif not _is_utf8(path):
                yield _failed_entry(path, "bad_file_name", "the folder name is not valid UTF-8 (not listed)")
            elif not any(path == ex or path.startswith(ex + os.sep) for ex in exclude):
                yield from _walk_local(path, extensions, exclude, stats, ancestors)
        elif not entry.name.lower().endswith(extensions):
            stats.skipped_files += 1
        else:
            yield _local_file(path, mode)


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


def list_file(path: str, *_: Any) -> Iterator[Source]:
    """A single audio file."""
    yield Source(canonical_uri(path))


Lister = Callable[[str, tuple[str, ...], tuple[str, ...], ListingStats], Iterator[Source]]


def _manifest_lister(fmt: str) -> Lister:
    return lambda manifest, *_: list_manifest(manifest, fmt)


# A manifest format is read by n2m.manifest (a new one is added there, with its suffix in its FORMATS).
LISTERS: dict[str, Lister] = {
    "dir": list_directory,
    "glob": list_glob,
    "file": list_file,
    **{fmt: _manifest_lister(fmt) for fmt in sorted(set(MANIFEST_FORMATS.values()))},
}


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
    if suffix in MANIFEST_FORMATS:
        return MANIFEST_FORMATS[suffix]
    if suffix in AUDIO_EXTENSIONS:
        return "file"
    raise UserError(f"input {src} is not a folder, a glob, an audio file or a manifest ({', '.join(MANIFEST_FORMATS)})")


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
