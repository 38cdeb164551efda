"""Data contracts shared by every job: clip keys, shard sample layout, Parquet schemas and the paths of a build.

See docs/architecture.md section 3. Change a contract only with a new ``*_VERSION``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import pyarrow as pa

from n2m.errors import ShardDamaged, UserError
from n2m.names import check_name

BUILD_VERSION = 1
LABELS_VERSION = 1

SPLITS = ("train", "valid", "test")
SOURCE_STATUSES = ("ok", "failed", "duplicate", "filtered")
_KEY_RE = re.compile(r"^[0-9a-f]{16}_\d{4,}$")


def source_id(canonical_uri: str) -> str:
    """First 16 hex chars of SHA-1 of the canonical source URI (stable across runs and runners)."""
    return hashlib.sha1(canonical_uri.encode("utf-8")).hexdigest()[:16]


def clip_key(src_id: str, clip_index: int) -> str:
    """``{source_id}_{clip_index:04d}``: no dots, since WebDataset splits keys at the first dot."""
    return f"{src_id}_{clip_index:04d}"


def is_clip_key(key: str) -> bool:
    return bool(_KEY_RE.match(key))


def source_id_of_key(key: str) -> str:
    """The source id part of a clip key."""
    return key.split("_", 1)[0]


def text_id(text: str) -> str:
    """Stable id of a caption/vocabulary entry: SHA-1 (16 hex) of its normalised text."""
    normalised = " ".join(text.lower().split())
    return hashlib.sha1(normalised.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------------
# Paths of a build output and its label sets (PurePosixPath so remote fsspec URIs keep their slashes)


@dataclass(frozen=True)
class BuildLayout:
    """Where everything of one build lives. ``root`` may be a local path or an fsspec URI."""

    root: str

    def _join(self, *parts: str) -> str:
        return str(PurePosixPath(self.root.rstrip("/"), *parts)) if "://" not in self.root else "/".join(
            [self.root.rstrip("/"), *parts]
        )

    def shard_dir(self, split: str) -> str:
        return self._join("shards", split)

    def shard(self, split: str, index: int) -> str:
        return self._join("shards", split, f"{split}-{index:06d}.tar")

    def shard_marker(self, split: str, index: int) -> str:
        return self._join("shards", split, f"{split}-{index:06d}.json")

    @property
    def index(self) -> str:
        return self._join("index.parquet")

    @property
    def sources(self) -> str:
        return self._join("sources.parquet")

    @property
    def build_json(self) -> str:
        return self._join("build.json")

    @property
    def labels_root(self) -> str:
        return self._join("labels")

    def label_dir(self, name: str) -> str:
        """``labels/{name}``; ``name`` must be one safe path component (:func:`n2m.names.check_name`)."""
        return self._join("labels", check_name(name, "label set name"))

    def label_table(self, name: str, split: str, index: int) -> str:
        return f"{self.label_dir(name)}/{split}-{index:06d}.parquet"

    def label_manifest(self, name: str) -> str:
        return f"{self.label_dir(name)}/manifest.json"

    def embedding_dir(self, model_hash: str) -> str:
        return self._join("embeddings", model_hash)


# ---------------------------------------------------------------------------------------------------------------------
# Parquet schemas

INDEX_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source_id", pa.string()),
        ("source_uri", pa.string()),
        ("clip_index", pa.int32()),
        ("split", pa.string()),
        ("shard", pa.string()),  # shard file name relative to shards/{split}/
        ("offset_s", pa.float64()),
        ("duration_s", pa.float64()),  # audio content (before padding)
        ("padded", pa.bool_()),
        ("sample_rate", pa.int32()),
        ("channels", pa.int32()),
        ("rms_db", pa.float32()),
    ]
)

SOURCES_SCHEMA = pa.schema(
    [
        ("source_id", pa.string()),
        ("source_uri", pa.string()),
        ("status", pa.string()),  # ok | failed | duplicate | filtered
        ("reason", pa.string()),  # machine-readable, "" for ok
        ("message", pa.string()),
        ("duration_s", pa.float64()),
        ("clips", pa.int32()),
        ("split", pa.string()),
        ("pcm_sha1", pa.string()),
        ("duplicate_of", pa.string()),
        ("meta_json", pa.string()),  # manifest columns as JSON
        ("decoder", pa.string()),  # n2m.audio.Decoded.decoder, e.g. soundfile:flac, pyav:ogg; "" when none decoded it
    ]
)

# One row per (clip, vocabulary) in labels/{name}/{split}-NNNNNN.parquet
LABELS_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("vocab", pa.string()),  # vocabulary name
        ("kind", pa.string()),  # long | short
        ("topk_ids", pa.list_(pa.string())),
        ("topk_scores", pa.list_(pa.float32())),
        ("captions", pa.list_(pa.string())),  # the K' sampled entries' texts
    ]
)

VOCAB_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("kind", pa.string()),  # long | short
        ("aspect", pa.string()),  # for short-form entries; "" for long
        ("track_id", pa.string()),
        ("backend", pa.string()),
        ("model", pa.string()),
        ("prompt_id", pa.string()),
    ]
)


def clip_json_fields() -> tuple[str, ...]:
    """Fields every shard ``{key}.json`` carries (docs/architecture.md section 3)."""
    return ("key", "source_id", "source_uri", "offset_s", "duration_s", "sample_rate", "channels", "split", "rms_db",
            "meta", "text")


def read_label_captions(label_dir: str, split: str | None = None) -> dict[str, dict[str, list[str]]]:
    """Captions of a label set: ``{key: {"long": [...], "short": [...]}}`` over all its tables (optionally one split).

    This is how training reads labels (through the contract, not the labelling job's internals).
    """
    import fsspec
    import pyarrow.parquet as pq

    fs, _, paths = fsspec.get_fs_token_paths(label_dir.rstrip("/") + "/*.parquet")
    captions: dict[str, dict[str, list[str]]] = {}
    for path in sorted(paths):
        if split is not None and not PurePosixPath(path).name.startswith(f"{split}-"):
            continue
        with fs.open(path, "rb") as handle:
            table = pq.read_table(handle, columns=["key", "kind", "captions"])
        for key, kind, texts in zip(table["key"].to_pylist(), table["kind"].to_pylist(), table["captions"].to_pylist()):
            entry = captions.setdefault(key, {"long": [], "short": []})
            entry.setdefault(kind, []).extend(texts or [])
    return captions


# ---------------------------------------------------------------------------------------------------------------------
# Reading a build: its id, its committed shards, its label sets


def _read(path: str) -> bytes:
    import fsspec

    with fsspec.open(path, "rb") as handle:
        return handle.read()


def build_id(build: str) -> str:
    """The id of a build: ``build_id`` of its ``build.json`` (else the file's SHA-1); ``""`` without a build.json."""
    path = BuildLayout(build).build_json
    try:
        data = _read(path)
    except FileNotFoundError:
        return ""
    try:
        return str(json.loads(data).get("build_id") or hashlib.sha1(data).hexdigest())
    except (ValueError, AttributeError):
        return hashlib.sha1(data).hexdigest()


def shard_marker_path(tar: str) -> str:
    """The commit marker ``{split}-NNNNNN.json`` beside a shard ``{split}-NNNNNN.tar``."""
    if not tar.endswith(".tar"):
        raise ValueError(f"not a shard path: {tar}")
    return tar[: -len(".tar")] + ".json"


def verify_shard(tar: str, content: bool = True) -> dict:
    """Check a committed shard against its marker before reading it; returns the marker.

    The marker ``{split}-NNNNNN.json`` (written after the tar, docs/architecture.md section 3) records ``tar.bytes`` and
    ``tar.sha1``. The tar's size must equal the byte count, and with ``content`` its SHA-1 (one streaming read) must
    equal the recorded one; otherwise :class:`n2m.errors.ShardDamaged` says which figure differs. A marker without
    these fields is refused too: n2m build always writes them, so the shard is not one of its commits.
    """
    import fsspec

    marker_path = shard_marker_path(tar)
    try:
        marker = json.loads(_read(marker_path))
        expected_bytes, expected_sha1 = int(marker["tar"]["bytes"]), str(marker["tar"]["sha1"])
    except FileNotFoundError as err:
        raise ShardDamaged(f"shard {tar} has no commit marker {marker_path} (not a committed shard)") from err
    except (ValueError, KeyError, TypeError) as err:
        raise ShardDamaged(f"marker {marker_path} records no byte count and SHA-1 of its tar "
                           "(not written by n2m build)") from err
    fs, _, (path,) = fsspec.get_fs_token_paths(tar)
    try:
        size = int(fs.size(path))
    except FileNotFoundError as err:
        raise ShardDamaged(f"shard {tar} is missing (its marker exists)") from err
    if size != expected_bytes:
        raise ShardDamaged(f"shard {tar} has {size} bytes but its marker records {expected_bytes} "
                           f"({'truncated' if size < expected_bytes else 'grown'}; rebuild it)")
    if content:
        digest = hashlib.sha1()
        with fs.open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        if digest.hexdigest() != expected_sha1:
            raise ShardDamaged(f"shard {tar} does not match the SHA-1 in its marker (content changed; rebuild it)")
    return marker


def check_label_set(build: str, name: str) -> dict:
    """The manifest of label set ``name`` of ``build``, refused unless it was made from this very build (same id)."""
    layout = BuildLayout(build)
    path = layout.label_manifest(name)
    try:
        manifest = json.loads(_read(path))
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
