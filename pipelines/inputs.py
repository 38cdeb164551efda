"""What a build reads: :class:`Source` (one input with its canonical URI, metadata and captions), what the listing
saw besides sources (:class:`ListingStats`), and canonical URIs.

``source_id = sha1(canonical URI)[:16]`` (``n2m.schema.source_id``), so the canonical form decides every clip key.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from n2m.schema import source_id
from n2m.storage import is_remote

LISTING_REASONS = (
    "bad_manifest_row",  # a manifest row without a usable path, malformed JSON/CSV, a key given twice
    "bad_file_name",  # a file or folder name that is not valid UTF-8 (it cannot be stored or shared)
    "symlink_loop",  # ELOOP, or a link back to a folder being walked
    "not_a_file",  # a FIFO, device or socket named like audio
    "listing_error",  # another error while listing a folder (e.g. permission denied)
)
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
