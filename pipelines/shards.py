"""Shard specs and the shard writer (ARCHITECTURE.md section 2, img2dataset's pattern).

Planning: each source gets a split from a hash of its id (so no source has clips in two splits); the sources of each
split are grouped, in listing order, into specs of ``per_shard`` sources named ``{split}-NNNNNN``. The same listing
and settings give the same specs on every run, so a re-run maps every source to the same shard name.

Writing: tar members in spec order with fixed metadata (mtime, owner, mode), so equal inputs give byte-identical tars.
A shard becomes visible only by rename, and it exists only once its marker ``{split}-NNNNNN.json`` is written after it.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

from n2m.errors import UserError
from n2m.schema import BUILD_VERSION
from pipelines.sources import Source

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


def shard_name(split: str, index: int) -> str:
    """``{split}-NNNNNN`` (matches ``n2m.schema.BuildLayout.shard``)."""
    return f"{split}-{index:06d}"


def parse_shard_name(name: str) -> tuple[str, int]:
    split, _, index = name.rpartition("-")
    return split, int(index)


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
        split = assign_split(source.source_id, splits)
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


def tar_member(name: str, size: int) -> tarfile.TarInfo:
    """A regular-file header with fixed mtime/owner/mode (USTAR)."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = TAR_MTIME
    info.mode = 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class HashingWriter(io.RawIOBase):
    """A write-only stream that counts and SHA-1s what passes through to ``inner``."""

    def __init__(self, inner: IO[bytes]):
        self.inner = inner
        self.sha1 = hashlib.sha1()
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        self.sha1.update(view)
        self.bytes += len(view)
        self.inner.write(view)
        return len(view)


class ShardWriter:
    """Append samples to a tar stream in call order: ``add(key, {"flac": bytes, "json": bytes})``."""

    def __init__(self, handle: IO[bytes]):
        self.stream = HashingWriter(handle)
        self.tar = tarfile.open(fileobj=self.stream, mode="w|", format=tarfile.USTAR_FORMAT)

    def add(self, key: str, members: Mapping[str, bytes]) -> None:
        for ext in sorted(members):
            data = members[ext]
            self.tar.addfile(tar_member(f"{key}.{ext}", len(data)), io.BytesIO(data))

    def close(self) -> dict[str, Any]:
        """Finish the archive; returns ``{"bytes", "sha1"}`` of the tar."""
        self.tar.close()
        return {"bytes": self.stream.bytes, "sha1": self.stream.sha1.hexdigest()}


def copy_shard(src: IO[bytes], dst: IO[bytes], keep: Callable[[str], bool]) -> dict[str, Any]:
    """Stream the members of tar ``src`` whose name ``keep`` accepts into ``dst`` (headers unchanged)."""
    writer = ShardWriter(dst)
    with tarfile.open(fileobj=src, mode="r|") as tar:
        for member in tar:
            if keep(member.name):
                handle = tar.extractfile(member)
                writer.tar.addfile(tar_member(member.name, member.size), handle)
    return writer.close()


def sample_json(fields: Mapping[str, Any]) -> bytes:
    """The ``{key}.json`` member: sorted keys, UTF-8 (deterministic bytes)."""
    return json.dumps(fields, sort_keys=True, ensure_ascii=False).encode("utf-8")
