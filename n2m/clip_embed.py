"""Embedding a shard's clips with a joint audio-text model, shared by ``n2m label`` (labeling/embed.py) and joint-embedding
training (training/joint_embeddings.py): each job reads the shard its own way and hands the encoded clips here.

Clips are decoded one by one, held in chunks of ``per_call`` at one sample rate (a change of rate flushes the chunk: the
embedder takes one rate per call) and embedded together; a clip that is missing or does not decode is recorded in
``failed`` with its reason and left out, never fatal.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from n2m.audio import AudioError, decode


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
