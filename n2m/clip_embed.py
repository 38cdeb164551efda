"""Embedding a shard's clips with a joint audio-text model, and the store of those embeddings, shared by ``n2m label``
(labeling/embed.py) and joint-embedding training (training/joint_embeddings.py): each job reads the shard its own way
and hands the encoded clips here, and either job reuses the files the other stored.

The store (docs/architecture.md section 3) is ``BUILD/embeddings/{model hash[:16]}/{shard sha1}.npz``: ``keys`` ``[n]``,
``embeddings`` float32 ``[n, D]`` (each the whole clip's L2-normalised embedding, :mod:`n2m.clap` rule 3), ``failed``
(JSON list of the clips that did not decode) and ``rules`` (JSON, :func:`store_rules`: model id, rate, window, tail
rule, reduction, shard SHA-1), written whole or not at all. Files are keyed by the shard's *content*, so a rebuilt
shard never picks up the embeddings of the old one; which stored rules a reader accepts is the reader's choice.

Clips are decoded one by one, held in chunks of ``per_call`` at one sample rate (a change of rate flushes the chunk: the
embedder takes one rate per call) and embedded together; a clip that is missing or does not decode is recorded in
``failed`` with its reason and left out, never fatal.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from n2m.audio import AudioError, decode
from n2m.storage import read_bytes, write_bytes_atomic

REDUCE = "mean_raw_then_l2"  # n2m.clap rule 3: the mean of the raw window embeddings, then L2-normalised


def embed_encoded(embedder, clips: Iterable[tuple[str, bytes | None]], failed: list[dict], per_call: int = 16,
                  batch_size: int = 8) -> tuple[list[str], np.ndarray]:
    """``(keys, embeddings [n, D] float32)`` of the decodable ``(key, encoded audio or None)`` pairs, in order;
    the others are appended to ``failed`` as ``{"key", "reason", "message"}``. ``embedder`` has ``embed_audio(clips,
    sample_rate, batch_size)`` and ``embed_dim`` (:class:`n2m.clap.ClapEmbedder`)."""
    keys: list[str] = []
    vectors: list[np.ndarray] = []
    chunk: list[tuple[str, np.ndarray, int]] = []

    def flush() -> None:
        if chunk:
            vectors.append(embedder.embed_audio([c[1] for c in chunk], chunk[0][2], batch_size=batch_size))
            keys.extend(c[0] for c in chunk)
            chunk.clear()

    for key, encoded in clips:
        if encoded is None:
            failed.append({"key": key, "reason": "missing", "message": f"{key}: sample has no .flac member"})
            continue
        try:
            decoded = decode(encoded, name=key)
        except AudioError as err:
            failed.append({"key": key, "reason": err.reason, "message": err.message})
            continue
        if chunk and chunk[0][2] != decoded.sample_rate:
            flush()
        chunk.append((key, decoded.samples, decoded.sample_rate))
        if len(chunk) >= per_call:
            flush()
    flush()
    embeddings = np.concatenate(vectors) if vectors else np.zeros((0, embedder.embed_dim), np.float32)
    return keys, embeddings.astype(np.float32, copy=False)


@dataclass
class Stored:
    """One store file: ``keys`` ``[n]``, ``embeddings`` ``[n, D]`` float32, ``failed`` clips and the ``rules``."""

    keys: list[str]
    embeddings: np.ndarray
    failed: list[dict]
    rules: dict


def store_rules(embedder, shard_sha1: str) -> dict:
    """What makes two store files comparable: the model, its window rule, the reduction and the shard's content."""
    return {"model_id": embedder.model_id, "sample_rate": embedder.sample_rate, "window_s": embedder.window_s,
            "min_tail_s": embedder.min_tail_s, "reduce": REDUCE, "shard_sha1": shard_sha1}


def save_store(path: str, keys: list[str], embeddings: np.ndarray, failed: list[dict], rules: dict) -> None:
    """Write one store file atomically (local path or fsspec URI)."""
    buffer = io.BytesIO()
    np.savez(buffer, keys=np.array(keys, dtype=str), embeddings=np.asarray(embeddings, np.float32),
             failed=np.array(json.dumps(failed)), rules=np.array(json.dumps(rules, sort_keys=True)))
    write_bytes_atomic(path, buffer.getvalue())


def load_store(path: str) -> Stored | None:
    """The store file at ``path``, or None when it is missing, unreadable or inconsistent (it is then computed
    again)."""
    try:
        with np.load(io.BytesIO(read_bytes(path)), allow_pickle=False) as data:
            stored = Stored([str(k) for k in data["keys"]], np.asarray(data["embeddings"], np.float32),
                            json.loads(str(data["failed"])), json.loads(str(data["rules"])))
    except (OSError, ValueError, KeyError):
        return None
    shaped = stored.embeddings.ndim == 2 and len(stored.keys) == stored.embeddings.shape[0]
    return stored if shaped else None
