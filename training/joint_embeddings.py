"""The joint model's audio embedding of every clip a run trains on: read from ``n2m label``'s store, else computed once
per shard and stored there (``--condition audio-embedding``, :mod:`training.conditioning`).

The store (docs/architecture.md section 3) is ``BUILD/embeddings/{model hash[:16]}/{shard sha1}.npz``: ``keys``
``[n]``, ``embeddings`` float32 ``[n, D]`` (each the whole clip's L2-normalised embedding, :mod:`n2m.clap` rule 3),
``failed`` (JSON list of the clips that did not decode) and ``rules`` (JSON: model id, rate, window, tail rule,
reduction, shard SHA-1). Files are keyed by the shard's *content* (the SHA-1 its commit marker records), so a rebuilt
shard never picks up the embeddings of the old one. A stored file is used when its rules name this model, this
reduction and this shard's content; the label job's tail rule (``--min-tail-s``) may differ from the default (either
way it is a whole-clip embedding). Files computed here carry the rules the label job writes for the same model, so
``n2m label`` reuses them in turn.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from tqdm.auto import tqdm

from n2m.clip_embed import embed_encoded
from n2m.schema import BuildLayout, verify_shard

log = logging.getLogger(__name__)

REDUCE = "mean_raw_then_l2"  # n2m.clap rule 3: the mean of the raw window embeddings, then L2-normalised
CLIPS_PER_CALL = 16  # clips decoded and embedded together


@dataclass
class ClipEmbeddings:
    """Clip key -> row of ``vectors`` ``[N, D]`` float32; ``stored`` / ``computed``: shards read or embedded here."""

    index: dict[str, int]
    vectors: np.ndarray
    stored: int = 0
    computed: int = 0

    def get(self, key: str) -> np.ndarray | None:
        row = self.index.get(key)
        return None if row is None else self.vectors[row]


def rules(embedder, shard_sha1: str) -> dict:
    """The rules a stored file records (those of ``n2m label`` for the same model, so the two share files)."""
    return {"model_id": embedder.model_id, "sample_rate": embedder.sample_rate, "window_s": embedder.window_s,
            "min_tail_s": embedder.min_tail_s, "reduce": REDUCE, "shard_sha1": shard_sha1}


def read_stored(path: str, model_sha1: str, shard_sha1: str) -> tuple[list[str], np.ndarray] | None:
    """``(keys, embeddings [n, D])`` of a stored file made by this model from this shard's content, else None (also
    for a missing or unreadable file: it is computed again)."""
    try:
        with fsspec.open(path, "rb") as handle:
            data = np.load(io.BytesIO(handle.read()), allow_pickle=False)
            stored = json.loads(str(data["rules"]))
            keys, vectors = [str(k) for k in data["keys"]], np.asarray(data["embeddings"], np.float32)
    except (OSError, ValueError, KeyError):
        return None
    same = (stored.get("model_id") == model_sha1 and stored.get("reduce") == REDUCE
            and stored.get("shard_sha1") == shard_sha1)
    return (keys, vectors) if same and vectors.ndim == 2 and len(keys) == vectors.shape[0] else None


def write_stored(path: str, keys: list[str], vectors: np.ndarray, failed: list[dict], file_rules: dict) -> None:
    """Write a store file whole or not at all (local: tmp + fsync + rename; object stores publish on completion)."""
    buffer = io.BytesIO()
    np.savez(buffer, keys=np.array(keys, dtype=str), embeddings=vectors.astype(np.float32),
             failed=np.array(json.dumps(failed)), rules=np.array(json.dumps(file_rules, sort_keys=True)))
    if "://" in path:
        with fsspec.open(path, "wb") as handle:
            handle.write(buffer.getvalue())
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as handle:
        handle.write(buffer.getvalue())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def embed_shard(embedder, url: str) -> tuple[list[str], np.ndarray, list[dict]]:
    """``(keys, embeddings [n, D], failed)`` of every clip of one shard, in shard order; a clip that does not decode
    is recorded in ``failed`` with its reason and left out (:func:`n2m.clip_embed.embed_encoded`)."""
    from training.data import read_shards

    failed: list[dict] = []
    clips = ((sample.get("__key__", "?"), sample.get("flac")) for sample in read_shards([url]))
    keys, embeddings = embed_encoded(embedder, clips, failed, CLIPS_PER_CALL)
    return keys, embeddings, failed


def clip_embeddings(build: str, urls: list[str], model_dir: str, model_sha1: str, device: str = "cpu") -> ClipEmbeddings:
    """The embeddings of every clip of the shards ``urls`` by the joint model in ``model_dir`` (content ``model_sha1``):
    stored files where they exist, the rest embedded (the model loads only then) and stored. Prints one summary line."""
    from n2m.clap import ClapEmbedder

    store = BuildLayout(build).embedding_dir(model_sha1[:16])
    keys: list[str] = []
    blocks: list[np.ndarray] = []
    stored = computed = 0
    unwritable, embedder = False, None
    for url in tqdm(urls, desc="joint embeddings", unit="shard", leave=False, disable=len(urls) < 4):
        shard_sha1 = str(verify_shard(url, content=False)["tar"]["sha1"])
        path = f"{store}/{shard_sha1}.npz"
        found = read_stored(path, model_sha1, shard_sha1)
        if found is None:
            if embedder is None:
                embedder = ClapEmbedder.from_pretrained(model_dir, device=device)
            shard_keys, vectors, failed = embed_shard(embedder, url)
            try:
                write_stored(path, shard_keys, vectors, failed, rules(embedder, shard_sha1))
            except OSError as err:
                if not unwritable:
                    log.warning("cannot store joint embeddings under %s (%s): they stay in memory for this run",
                                store, err)
                unwritable = True
            found, computed = (shard_keys, vectors), computed + 1
        else:
            stored += 1
        keys.extend(found[0])
        blocks.append(found[1])
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)
    if rank_zero_only.rank == 0:
        print(f"n2m train: joint embeddings of {len(keys)} clips from {len(urls)} shards ({stored} stored, {computed} "
              f"computed now) in {store}", file=sys.stderr)
    return ClipEmbeddings({k: i for i, k in enumerate(keys)}, vectors, stored, computed)
