"""Helpers of the ``n2m build`` tests: music-ish test signals, odd containers, and running the real CLI."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from n2m.cli import main

CLIP_S = 2.0
OUT_SR = 16000
SLOW_S = 1.5  # the slow handler answers after this long; builds use --fetch-timeout 0.3
BUILD_FLAGS = ["--sample-rate", str(OUT_SR), "--clip-seconds", str(CLIP_S), "--min-clip-seconds", "1",
               "--split", "train=0.5,valid=0.25,test=0.25", "--sources-per-shard", "2", "--fetch-timeout", "0.3",
               "--fetch-retries", "1", "--fetch-backoff", "0.05", "--max-source-mb", "1", "--no-progress"]


def music(seconds: float, sr: int, channels: int, seed: int) -> np.ndarray:
    """A few seconds of 'music': a decaying harmonic note sequence plus soft noise, float32 ``[channels, T]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    notes = 110.0 * 2 ** (rng.integers(0, 24, size=8) / 12)
    y = np.zeros_like(t)
    for i, f0 in enumerate(notes):
        start = i * seconds / len(notes)
        env = np.where(t >= start, np.exp(-(t - start) * 3.0), 0.0)
        y += env * sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3))
    y = 0.25 * y / np.max(np.abs(y)) + 0.01 * rng.standard_normal(t.shape)
    return np.stack([y * (1 - 0.2 * c) for c in range(channels)]).astype(np.float32)


def write_ogg(path: Path, x: np.ndarray, sr: int) -> None:
    """Vorbis in blocks (one large libsndfile Vorbis write can crash)."""
    with sf.SoundFile(path, "w", sr, x.shape[0], format="OGG") as handle:
        for start in range(0, x.shape[1], sr // 2):
            handle.write(x[:, start:start + sr // 2].T)


def video_only_mp4() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for _ in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


def build(src: Path | str, out: Path, *extra: str) -> int:
    """Run ``n2m build`` in-process through the real CLI."""
    return main(["build", "--input", str(src), "--output", str(out), *BUILD_FLAGS, *extra])


def shard_bytes(out: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every tar under OUT/shards."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "shards").rglob("*.tar"))}
