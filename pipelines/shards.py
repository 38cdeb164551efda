"""Shard specs and the shard writer (docs/architecture.md section 3, img2dataset's pattern).

Planning: each source gets a split from a hash of its id (so no source has clips in two splits), unless its manifest
row names one in a ``split`` column (a data set's own train/eval lists, e.g. MusicCaps' ``is_eval``); the sources of each
split are grouped, in listing order, into specs of ``per_shard`` sources named ``{split}-NNNNNN``. The same listing
and settings give the same specs on every run, so a re-run maps every source to the same shard name.

Writing: tar members in spec order with fixed metadata (mtime, owner, mode), so equal inputs give byte-identical tars.
A shard becomes visible only by rename, and it exists only once its marker ``{split}-NNNNNN.json`` is written after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from n2m.errors import UserError
from n2m.layout import shard_name
from n2m.pipelines.sources import Source
from n2m.schema import BUILD_VERSION

TAR_MTIME = 946684800  # 2000-01-01T00:00:00Z, fixed so that re-runs are byte-identical
_SPLIT_SALT = b"n2m-split:"


# ---------------------------------------------------------------------------------------------------------------------
# Splits


def parse_splits(text: str) -> tuple[tuple[str, float], ...]:
    """``"train=0.98,valid=0.01,test=0.01"`` -> ``(("train", 0.98), ...)``; fractions must sum to 1."""
    splits = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier() or "-" in name:
            raise UserError(f"--split: expected NAME=FRACTION pairs, got {part!r}")
        try:
            fraction = float(value)
        except ValueError:
            raise UserError(f"--split: {value!r} is not a number") from None
        if fraction < 0:
            raise UserError(f"--split: fraction of {name} is negative")
        splits.append((name, fraction))
    names = [n for n, _ in splits]
    if not splits or len(set(names)) != len(names):
        raise UserError(f"--split: give each split once ({text!r})")
    if abs(sum(f for _, f in splits) - 1.0) > 1e-6:
        raise UserError(f"--split: fractions sum to {sum(f for _, f in splits):g}, not 1")
    return tuple(splits)


def assign_split(src_id: str, splits: tuple[tuple[str, float], ...]) -> str:
    """The split of a source: ``u = sha1(salt + id)`` as a fraction in [0, 1), mapped through the cumulative fractions."""
    u = int(hashlib.sha1(_SPLIT_SALT + src_id.encode()).hexdigest()[:15], 16) / float(16**15)
    edge = 0.0
    for name, fraction in splits:
        edge += fraction
        if u < edge:
            return name
    return next(name for name, f in reversed(splits) if f > 0)


def source_split(source: Source, splits: tuple[tuple[str, float], ...]) -> tuple[str, Source]:
    """The split of ``source`` and the source to plan: a manifest ``split`` value naming one of ``splits`` pins it
    there (whatever the fractions); any other value fails the source (``bad_manifest_row``, its reason recorded) in
    its hashed split. The hash of the id decides for every source without the column."""
    hashed = assign_split(source.source_id, splits)
    pinned = source.meta.get("split")
    if pinned is None or source.error:
        return hashed, source
    names = [name for name, _ in splits]
    if isinstance(pinned, str) and pinned.strip() in names:
        return pinned.strip(), source
    error = f"manifest split {pinned!r} is not one of the build's splits ({', '.join(names)})"
    return hashed, dataclasses.replace(source, error=error, reason="bad_manifest_row")


# ---------------------------------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class ShardSpec:
    """The sources of one shard, fixed before any audio is read. ``retry``: written by ``--retry-failed``."""

    split: str
    index: int
    sources: tuple[Source, ...]
    retry: bool = False

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index)

    def spec_hash(self, settings_hash: str) -> str:
        """Identity of what this shard will hold: build settings + its sources (URIs, metadata, captions)."""
        digest = hashlib.sha1(f"{BUILD_VERSION}:{settings_hash}:{self.split}:{self.index}".encode())
        for source in self.sources:
            digest.update(json.dumps(source.to_json(), sort_keys=True).encode())
        return digest.hexdigest()

    def to_json(self, settings_hash: str) -> dict[str, Any]:
        return {"split": self.split, "index": self.index, "retry": self.retry,
                "spec_hash": self.spec_hash(settings_hash), "sources": [s.to_json() for s in self.sources]}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ShardSpec:
        return cls(obj["split"], int(obj["index"]), tuple(Source.from_json(s) for s in obj["sources"]),
                   bool(obj.get("retry")))


def plan_shards(
    sources: Iterable[Source],
    splits: tuple[tuple[str, float], ...],
    per_shard: int,
    start: Mapping[str, int] | None = None,
    retry: bool = False,
) -> Iterator[ShardSpec]:
    """Group sources into specs of ``per_shard`` per split, in order (one open spec per split in memory)."""
    if per_shard < 1:
        raise ValueError("per_shard must be >= 1")
    buffers: dict[str, list[Source]] = {name: [] for name, _ in splits}
    index = {name: (start or {}).get(name, 0) for name, _ in splits}
    for source in sources:
        split, source = source_split(source, splits)
        buffers[split].append(source)
        if len(buffers[split]) == per_shard:
            yield ShardSpec(split, index[split], tuple(buffers[split]), retry)
            buffers[split] = []
            index[split] += 1
    for name, _ in splits:
        if buffers[name]:
            yield ShardSpec(name, index[name], tuple(buffers[name]), retry)


# ---------------------------------------------------------------------------------------------------------------------
# Deterministic tar writing
#
# A USTAR archive is a run of members (512-byte header + data padded to 512) closed by two zero blocks and padded to
# a 10240-byte record -- exactly what ``tarfile`` writes. Writing members as bytes lets a source's members be staged
# on their own and the shard be assembled later by concatenation (leaving duplicates out) with the same bytes.


def tar_member(name: str, size: int) -> tarfile.TarInfo:
    """A regular-file header with fixed mtime/owner/mode (USTAR)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def member_bytes(name: str, data: bytes) -> bytes:
    """One tar member: header, data, zero padding to a 512-byte block."""
    header = tar_member(name, len(data)).tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
    return header + data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


def sample_bytes(key: str, members: Mapping[str, bytes]) -> bytes:
    """The members of one WebDataset sample (``{key}.{ext}``, extensions sorted)."""
    return b"".join(member_bytes(f"{key}.{ext}", members[ext]) for ext in sorted(members))


def tar_end(length: int) -> bytes:
    """End-of-archive for ``length`` bytes of members: two zero blocks, then zeros up to a whole record."""
    end = 2 * tarfile.BLOCKSIZE
    return b"\0" * (end + (-(length + end) % tarfile.RECORDSIZE))


class TarAssembler:
    """Write members (as bytes) to a stream, then close the archive; tracks the size and SHA-1 of the tar."""

    def __init__(self, handle: IO[bytes]):
        self.handle = handle
        self.sha1 = hashlib.sha1()
        self.bytes = 0

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.sha1.update(data)
        self.bytes += len(data)

    def close(self) -> dict[str, Any]:
        """Write the end-of-archive blocks; returns ``{"bytes", "sha1"}`` of the whole tar."""
        self.write(tar_end(self.bytes))
        return {"bytes": self.bytes, "sha1": self.sha1.hexdigest()}


def sample_json(fields: Mapping[str, Any]) -> bytes:
    """The ``{key}.json`` member: sorted keys, UTF-8 (deterministic bytes), strict JSON (a NaN raises; the listing
    stores manifest NaNs as null)."""
    return json.dumps(fields, sort_keys=True, ensure_ascii=False, allow_nan=False).encode("utf-8")
