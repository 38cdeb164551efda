"""Where the files of a build live and what makes them exist (docs/architecture.md section 3)::

    OUT/shards/{split}/{split}-NNNNNN.tar     a shard (WebDataset tar)
    OUT/shards/{split}/{split}-NNNNNN.json    its commit marker, written last: byte count + SHA-1 of the tar, its rows
    OUT/index.parquet · sources.parquet · build.json · build.lock
    OUT/labels/{name}/{split}-NNNNNN.parquet + manifest.json
    OUT/embeddings/{model hash}/…
    OUT/_work/plan/{shard}.json · _work/stage/{chunk}.tar + .json · _work/workers.log   (a running build's own files)

A shard exists only when its marker does (img2dataset's pattern): :func:`committed_shards` is the one place that
decides which shards a build holds, :func:`verify_shard` checks one against its marker before it is read. ``root``
may be a local folder or an fsspec URI; every read goes through :mod:`n2m.storage`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from n2m.errors import ShardDamaged, UserError
from n2m.names import check_name
from n2m.provenance import stream_hash
from n2m.storage import TMP_MARK, Store, exists, is_remote, read_bytes

SPLITS = ("train", "valid", "test")  # the known splits, in the order every listing of a build gives them
WORK_DIR = "_work"
_MARKER = re.compile(r"^(?P<split>.+)-(?P<index>\d{6,})\.json$")


def shard_name(split: str, index: int) -> str:
    """``{split}-NNNNNN``: a shard's file name without its extension."""
    return f"{split}-{index:06d}"


def parse_shard_name(name: str) -> tuple[str, int]:
    """``{split}-NNNNNN`` -> ``(split, index)``."""
    split, _, index = name.rpartition("-")
    return split, int(index)


def shard_marker_path(tar: str) -> str:
    """The commit marker ``{split}-NNNNNN.json`` beside a shard ``{split}-NNNNNN.tar``."""
    if not tar.endswith(".tar"):
        raise ValueError(f"not a shard path: {tar}")
    return tar[: -len(".tar")] + ".json"


def split_order(split: str) -> tuple[int, str]:
    """Sort key of split names: the known :data:`SPLITS` first, in their order, then the others by name."""
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


@dataclass(frozen=True)
class BuildLayout:
    """The paths of one build. ``root`` may be a local path or an fsspec URI (which keeps its ``scheme://``)."""

    root: str

    def join(self, *parts: str) -> str:
        if is_remote(self.root):
            return "/".join([self.root.rstrip("/"), *parts])
        return str(PurePosixPath(self.root.rstrip("/"), *parts))

    # -- shards -------------------------------------------------------------------------------------------------------

    @property
    def shards_root(self) -> str:
        return self.join("shards")

    def shard_dir(self, split: str) -> str:
        return self.join("shards", split)

    def shard(self, split: str, index: int) -> str:
        return self.join("shards", split, f"{shard_name(split, index)}.tar")

    def shard_marker(self, split: str, index: int) -> str:
        return self.join("shards", split, f"{shard_name(split, index)}.json")

    def shard_files(self, name: str) -> tuple[str, str]:
        """``(tar, marker)`` of the shard ``{split}-NNNNNN``."""
        split, index = parse_shard_name(name)
        return self.shard(split, index), self.shard_marker(split, index)

    # -- tables -------------------------------------------------------------------------------------------------------

    @property
    def index(self) -> str:
        return self.join("index.parquet")

    @property
    def sources(self) -> str:
        return self.join("sources.parquet")

    @property
    def build_json(self) -> str:
        return self.join("build.json")

    @property
    def lock(self) -> str:
        """``build.lock``: the pid and host of a running build (n2m.pipelines.lock)."""
        return self.join("build.lock")

    # -- what is derived from the shards ------------------------------------------------------------------------------

    @property
    def labels_root(self) -> str:
        return self.join("labels")

    def label_dir(self, name: str) -> str:
        """``labels/{name}``; ``name`` must be one safe path component (:func:`n2m.names.check_name`)."""
        return self.join("labels", check_name(name, "label set name"))

    def label_table(self, name: str, split: str, index: int) -> str:
        return f"{self.label_dir(name)}/{shard_name(split, index)}.parquet"

    def label_manifest(self, name: str) -> str:
        return f"{self.label_dir(name)}/manifest.json"

    def embedding_dir(self, model_hash: str) -> str:
        return self.join("embeddings", model_hash)

    # -- a running build's work files (removed when it completes) -----------------------------------------------------

    @property
    def work_dir(self) -> str:
        return self.join(WORK_DIR)

    @property
    def plan_dir(self) -> str:
        return self.join(WORK_DIR, "plan")

    def plan(self, shard: str) -> str:
        """The spec of a pending shard, written by the driver before the pipeline runs."""
        return self.join(WORK_DIR, "plan", f"{shard}.json")

    @property
    def stage_dir(self) -> str:
        return self.join(WORK_DIR, "stage")

    def stage_tar(self, chunk: str) -> str:
        """A chunk's decoded tar members (a chunk is a run of one shard's sources)."""
        return self.join(WORK_DIR, "stage", f"{chunk}.tar")

    def stage_marker(self, chunk: str) -> str:
        """A chunk's rows and member byte ranges, written after :meth:`stage_tar`."""
        return self.join(WORK_DIR, "stage", f"{chunk}.json")

    @property
    def worker_log(self) -> str:
        return self.join(WORK_DIR, "workers.log")


# ---------------------------------------------------------------------------------------------------------------------
# Committed shards


@dataclass(frozen=True)
class Shard:
    """A committed shard: its tar and its marker both exist."""

    split: str
    index: int
    tar: str
    marker: str

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index)


def committed_shards(build: str, splits: Iterable[str] | None = None) -> list[Shard]:
    """The committed shards of a build (optionally of some splits): a ``{split}-NNNNNN.json`` marker and its tar both in
    ``shards/{split}/``. Sorted by split (:func:`split_order`), then index; empty when the build has no shards.

    Only listings are read (two per split), never a marker: this is cheap on an object store. Whether a shard's bytes
    still match its marker is :func:`verify_shard`'s job.
    """
    layout = BuildLayout(build)
    store = Store(build)
    wanted = None if splits is None else set(splits)
    found = []
    for split in sorted(store.listdir(layout.shards_root), key=split_order):
        if TMP_MARK in split or (wanted is not None and split not in wanted):
            continue
        files = set(store.listdir(layout.shard_dir(split)))
        for file in files:
            match = _MARKER.match(file)
            if match and match["split"] == split and f"{file[:-len('.json')]}.tar" in files:
                index = int(match["index"])
                found.append(Shard(split, index, layout.shard(split, index), layout.shard_marker(split, index)))
    return sorted(found, key=lambda s: (split_order(s.split), s.index))


def verify_shard(tar: str, content: bool = True) -> dict:
    """Check a committed shard against its marker before reading it; returns the marker.

    The marker ``{split}-NNNNNN.json`` (written after the tar) records ``tar.bytes`` and ``tar.sha1``. The tar's size
    must equal the byte count, and with ``content`` its SHA-1 (one streaming read) must equal the recorded one;
    otherwise :class:`n2m.errors.ShardDamaged` says which figure differs. A marker without these fields is refused too:
    n2m build always writes them, so the shard is not one of its commits.
    """
    marker_path = shard_marker_path(tar)
    try:
        marker = json.loads(read_bytes(marker_path))
        expected_bytes, expected_sha1 = int(marker["tar"]["bytes"]), str(marker["tar"]["sha1"])
    except FileNotFoundError as err:
        raise ShardDamaged(f"shard {tar} has no commit marker {marker_path} (not a committed shard)") from err
    except (ValueError, KeyError, TypeError) as err:
        raise ShardDamaged(f"marker {marker_path} records no byte count and SHA-1 of its tar "
                           "(not written by n2m build)") from err
    store = Store(tar)
    try:
        size = store.size(tar)
    except FileNotFoundError as err:
        raise ShardDamaged(f"shard {tar} is missing (its marker exists)") from err
    if size != expected_bytes:
        raise ShardDamaged(f"shard {tar} has {size} bytes but its marker records {expected_bytes} "
                           f"({'truncated' if size < expected_bytes else 'grown'}; rebuild it)")
    if content:
        with store.open_read(tar) as handle:
            actual_sha1 = stream_hash(handle)
        if actual_sha1 != expected_sha1:
            raise ShardDamaged(f"shard {tar} does not match the SHA-1 in its marker (content changed; rebuild it)")
    return marker


# ---------------------------------------------------------------------------------------------------------------------
# A build's identity and its label sets


def build_id(build: str) -> str:
    """The id of a build: ``build_id`` of its ``build.json`` (else the file's SHA-1); ``""`` without a build.json."""
    try:
        data = read_bytes(BuildLayout(build).build_json)
    except FileNotFoundError:
        return ""
    try:
        return str(json.loads(data).get("build_id") or hashlib.sha1(data).hexdigest())
    except (ValueError, AttributeError):
        return hashlib.sha1(data).hexdigest()


def read_label_manifest(label_dir: str) -> dict:
    """``labels/NAME/manifest.json`` of a finished label set (one-line error otherwise)."""
    path = f"{label_dir.rstrip('/')}/manifest.json"
    if not exists(path):
        raise UserError(f"{label_dir}: no manifest.json (not a finished n2m label set)")
    return json.loads(read_bytes(path))


def check_label_set(build: str, name: str) -> dict:
    """The manifest of label set ``name`` of ``build``, refused unless it was made from this very build (same id)."""
    path = BuildLayout(build).label_manifest(name)
    try:
        manifest = json.loads(read_bytes(path))
    except FileNotFoundError as err:
        raise UserError(f"label set {name!r} not found ({path} is missing; run n2m label --name {name})") from err
    except ValueError as err:
        raise UserError(f"{path} is not valid JSON: {err}") from err
    made_from = str((manifest.get("build") or {}).get("id") or "") if isinstance(manifest, dict) else ""
    current = build_id(build)
    if not made_from:
        raise UserError(f"label set {name!r} records no build id ({path}): label the build again with n2m label")
    if made_from != current:
        raise UserError(f"label set {name!r} was made from build {made_from}, but {build} is build {current or '?'}: "
                        f"label this build again (n2m label --name {name} --overwrite)")
    return manifest
