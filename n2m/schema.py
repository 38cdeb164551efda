"""Data contracts shared by every job: clip keys, the shard sample's fields, the Parquet schemas (index, sources,
label sets, vocabularies), how training reads a label set, and the sidecar of a generated clip. Where the files live and what makes a shard exist is
:mod:`n2m.layout`; how they are written is :mod:`n2m.storage`.

See docs/architecture.md section 3. Change a contract only with a new ``*_VERSION``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa

from n2m.errors import UserError
from n2m.layout import BuildLayout
from n2m.storage import Store, glob

BUILD_VERSION = 1
LABELS_VERSION = 1

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
    import pyarrow.parquet as pq

    captions: dict[str, dict[str, list[str]]] = {}
    for path in glob(label_dir.rstrip("/") + "/*.parquet"):
        if split is not None and not PurePosixPath(path).name.startswith(f"{split}-"):
            continue
        with Store(path).open_read(path) as handle:
            table = pq.read_table(handle, columns=["key", "kind", "captions"])
        for key, kind, texts in zip(table["key"].to_pylist(), table["kind"].to_pylist(), table["captions"].to_pylist()):
            entry = captions.setdefault(key, {"long": [], "short": []})
            entry.setdefault(kind, []).extend(texts or [])
    return captions


def read_index(build: str, columns: list[str]) -> pa.Table:
    """Columns of a build's ``index.parquet`` (``INDEX_SCHEMA``); a one-line error when the build has none."""
    return _read_table(BuildLayout(build).index, build, columns)


def read_sources(build: str, columns: list[str]) -> pa.Table:
    """Columns of a build's ``sources.parquet`` (``SOURCES_SCHEMA``); a one-line error when the build has none."""
    return _read_table(BuildLayout(build).sources, build, columns)


def _read_table(path: str, build: str, columns: list[str]) -> pa.Table:
    import pyarrow.parquet as pq

    try:
        with Store(path).open_read(path) as handle:
            return pq.read_table(handle, columns=columns)
    except FileNotFoundError as err:
        raise UserError(f"{path} is missing: is {build} a finished n2m build? (make one with n2m build)") from err


# ---------------------------------------------------------------------------------------------------------------------
# Sample sidecar: ``{id}.json`` beside each ``{id}.wav`` of n2m sample, written last (a clip exists when it does)

SAMPLE_SIDECAR_FIELDS = (
    "id", "prompt_id", "prompt", "audio_prompt", "melody", "guidance", "sample_index", "seed", "run_seed",
    "sample_rate", "gain_db", "seconds", "cascade", "stages", "sampler_settings", "lineage", "intermediates", "timing",
    "config", "versions", "created_at",
)  # audio_prompt and melody: {path, sha256, offset_s, seconds} or null; lineage: {build_ids, label_sets};
# gain_db: 0, or below 0 where the clip peaked above full scale and was scaled down to it


def sidecar_path(audio: str | os.PathLike) -> Path:
    """The sidecar ``{id}.json`` of a generated clip ``{id}.wav``."""
    return Path(audio).with_suffix(".json")


def read_sidecar(audio: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of a generated clip; ``None`` when the clip has none. Raises ``ValueError`` when the file is not a
    JSON object (damaged, or not written by n2m sample)."""
    path = sidecar_path(audio)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data
