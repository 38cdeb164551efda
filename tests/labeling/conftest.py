"""Fixtures for the labelling tests: tiny random CLAP models saved in the transformers layout."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CAPTIONS = [
    "a calm piano piece", "fast techno with drums", "sad violin melody", "happy guitar pop song",
    "ambient synth pad", "upbeat jazz with saxophone", "slow acoustic folk", "energetic rock with electric guitar",
]


@pytest.fixture(scope="session")
def micro_clap_dir(tmp_path_factory):
    """A random ``micro`` preset CLAP directory, made by the same factory as ``n2m clap-train``."""
    from n2m.labeling.presets import build_clap, save_clap

    model, features, tokenizer = build_clap("micro", CAPTIONS * 4, seed=0)
    return str(save_clap(tmp_path_factory.mktemp("micro_clap"), model, features, tokenizer))


@pytest.fixture(scope="session")
def micro_embedder(micro_clap_dir):
    from n2m.clap import ClapEmbedder

    return ClapEmbedder.from_pretrained(micro_clap_dir)


# ---------------------------------------------------------------------------------------------------------------------
# A tiny build written directly to the contract (docs/architecture.md section 3), for jobs that read one


def write_build(root, shards: dict[str, list[list[dict]]], sample_rate: int = 24_000, corrupt: set[str] = frozenset(),
                build_id: str = "test-build-1"):
    """Write ``root/shards/{split}/{split}-NNNNNN.tar`` + marker, index.parquet, sources.parquet and build.json.

    ``shards``: split -> list of shards -> list of clips ``{"uri", "seconds", "freq", "meta"}``. Keys in ``corrupt``
    get FLAC bytes cut in half. Markers record the tar's byte count and SHA-1 and the clip keys, as n2m build's do.
    Returns ``{key: clip}``.
    """
    import hashlib
    import json
    from pathlib import Path

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import webdataset as wds

    from n2m.audio import encode_flac
    from n2m.schema import INDEX_SCHEMA, SOURCES_SCHEMA, clip_key, source_id

    root = Path(root)
    index, sources, clips = [], [], {}
    for split, shard_list in shards.items():
        folder = root / "shards" / split
        folder.mkdir(parents=True, exist_ok=True)
        for n, shard in enumerate(shard_list):
            name = f"{split}-{n:06d}"
            with wds.TarWriter(str(folder / f"{name}.tar")) as sink:
                for clip in shard:
                    sid = source_id(clip["uri"])
                    key = clip_key(sid, 0)
                    t = np.arange(int(clip["seconds"] * sample_rate)) / sample_rate
                    audio = (0.3 * np.sin(2 * np.pi * clip["freq"] * t)).astype(np.float32)[None]
                    flac = encode_flac(audio, sample_rate)
                    if key in corrupt:
                        flac = flac[: len(flac) // 2]
                    fields = {"key": key, "source_id": sid, "source_uri": clip["uri"], "offset_s": 0.0,
                              "duration_s": clip["seconds"], "sample_rate": sample_rate, "channels": 1,
                              "split": split, "rms_db": -13.5, "meta": clip.get("meta", {}),
                              "text": clip.get("text", [])}
                    sink.write({"__key__": key, "flac": flac, "json": json.dumps(fields).encode()})
                    clips[key] = dict(clip, key=key, split=split, shard=name)
                    index.append({"key": key, "source_id": sid, "source_uri": clip["uri"], "clip_index": 0,
                                  "split": split, "shard": f"{name}.tar", "offset_s": 0.0,
                                  "duration_s": clip["seconds"], "padded": False, "sample_rate": sample_rate,
                                  "channels": 1, "rms_db": -13.5})
                    sources.append({"source_id": sid, "source_uri": clip["uri"], "status": "ok", "reason": "",
                                    "message": "", "duration_s": clip["seconds"], "clips": 1, "split": split,
                                    "pcm_sha1": "", "duplicate_of": "", "meta_json": json.dumps(clip.get("meta", {}))})
            data = (folder / f"{name}.tar").read_bytes()
            (folder / f"{name}.json").write_text(json.dumps({
                "shard": f"{name}.tar", "tar": {"bytes": len(data), "sha1": hashlib.sha1(data).hexdigest()},
                "clips": [{"key": r["key"]} for r in index if r["shard"] == f"{name}.tar" and r["split"] == split]}))
    pq.write_table(pa.Table.from_pylist(index, schema=INDEX_SCHEMA), root / "index.parquet")
    pq.write_table(pa.Table.from_pylist(sources, schema=SOURCES_SCHEMA), root / "sources.parquet")
    (root / "build.json").write_text(json.dumps({"build_id": build_id, "sample_rate": sample_rate}))
    return clips


def write_vocab(path, texts: list[str], kind: str, aspects: list[str] | None = None):
    """A ``VOCAB_SCHEMA`` Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from n2m.schema import VOCAB_SCHEMA, text_id

    rows = [{"id": text_id(t), "text": t, "kind": kind, "aspect": (aspects or [""] * len(texts))[i], "track_id": "",
             "backend": "test", "model": "", "prompt_id": ""} for i, t in enumerate(texts)]
    pq.write_table(pa.Table.from_pylist(rows, schema=VOCAB_SCHEMA), path)
    return str(path)
