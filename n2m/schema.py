"""Data contracts shared by every job: clip keys, shard sample layout, Parquet schemas and the paths of a build.

See ARCHITECTURE.md section 2. Change a contract only with a new ``*_VERSION``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

import pyarrow as pa

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

    def label_dir(self, name: str) -> str:
        return self._join("labels", name)

    def label_table(self, name: str, split: str, index: int) -> str:
        return self._join("labels", name, f"{split}-{index:06d}.parquet")

    def label_manifest(self, name: str) -> str:
        return self._join("labels", name, "manifest.json")

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
    """Fields every shard ``{key}.json`` carries (ARCHITECTURE.md section 2)."""
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
