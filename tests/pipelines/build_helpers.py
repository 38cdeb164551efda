"""Helpers of the ``n2m build`` tests: music-ish test signals, odd containers, and running the real CLI."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from n2m.cli import main

CLIP_S = 2.0
OUT_SR = 16000
SLOW_S = 1.5  # the slow handler answers after this long; builds use --fetch-timeout 0.3
TRICKLE_S = 0.02  # the trickling handler sends one byte per this many seconds
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


def _ogg_crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
        table.append(crc)
    return table


_OGG_CRC = _ogg_crc_table()


def ogg_pages(data: bytes) -> list[bytearray]:
    """The pages of an Ogg stream (RFC 3533 section 6: 27-byte header, segment table at 27, body after it)."""
    pages, pos = [], 0
    while pos < len(data):
        assert data[pos:pos + 4] == b"OggS"
        segments = data[pos + 26]
        end = pos + 27 + segments + sum(data[pos + 27:pos + 27 + segments])
        pages.append(bytearray(data[pos:end]))
        pos = end
    return pages


def ogg_page_bytes(page: bytearray) -> bytes:
    """A page with its CRC recomputed: CRC-32, polynomial 0x04C11DB7, initial 0, no reflection, computed with the
    CRC field (bytes 22-25) zeroed (RFC 3533 section 6)."""
    struct.pack_into("<I", page, 22, 0)
    crc = 0
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[(crc >> 24) ^ byte]
    struct.pack_into("<I", page, 22, crc)
    return bytes(page)


def with_page_gap(ogg: bytes, first: int) -> bytes:
    """The same Ogg stream with pages ``first``.. numbered one higher (page sequence number: bytes 18-21). Every byte
    of audio is still there, but libogg reports a hole in the page sequence."""
    pages = ogg_pages(ogg)
    for page in pages[first:]:
        struct.pack_into("<I", page, 18, struct.unpack_from("<I", page, 18)[0] + 1)
    return b"".join(ogg_page_bytes(page) for page in pages)


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
