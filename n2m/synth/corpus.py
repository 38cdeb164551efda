"""The synthetic corpus: choose each track's ground truth, compose, render, encode, and write ``manifest.jsonl``.

Determinism: track ``i`` of seed ``s`` draws everything from generators seeded by ``(s, i, stream)``, so it is the same
file whatever ``--tracks`` or ``--workers`` is. Styles and lead instruments are dealt from shuffled decks (one deck per
block of tracks), so every style and every lead timbre is equally common. A track is held out (``"holdout": true``)
when ``floor((i + 1) f) > floor(i f)`` for fraction ``f``: exactly ``floor(N f)`` of the first ``N`` tracks, evenly spread.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from n2m.audio import encode
from n2m.manifest import read_rows
from n2m.storage import write_bytes_atomic
from n2m.synth import captions
from n2m.synth.compose import TrackSpec, compose
from n2m.synth.dsp import SAMPLE_RATE
from n2m.synth.harmony import key_name
from n2m.synth.instruments import INSTRUMENTS, MELODIC
from n2m.synth.render import render
from n2m.synth.styles import MOODS, STYLES

FORMATS = ("flac", "mp3", "wav", "ogg")
MANIFEST = "manifest.jsonl"
AUDIO_DIR = "audio"
_STREAMS = {"spec": 0, "compose": 1, "render": 2, "text": 3}
_DECK_SALT = {"style": 101, "lead": 102}


@dataclass(frozen=True)
class CorpusConfig:
    """Everything that determines the corpus' bytes."""

    seed: int = 0
    min_seconds: float = 35.0
    max_seconds: float = 150.0
    holdout: float = 0.0
    formats: tuple[str, ...] = FORMATS


def track_rng(seed: int, index: int, stream: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index, _STREAMS[stream]]))


def _deal(seed: int, index: int, deck: tuple[str, ...], what: str) -> str:
    """Card ``index`` of an endless sequence of shuffled decks (balanced, and independent of the corpus size)."""
    block, position = divmod(index, len(deck))
    order = np.random.default_rng(np.random.SeedSequence([seed, block, _DECK_SALT[what]])).permutation(len(deck))
    return deck[int(order[position])]


def _weighted(rng: np.random.Generator, weights: dict[str, float], exclude: str = "") -> str:
    names = [name for name in weights if name != exclude]
    p = np.array([weights[name] for name in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def chosen_for_holdout(index: int, fraction: float) -> bool:
    """Whether track ``index`` is held out at ``fraction`` (module docstring). This decides the manifest's
    ``holdout`` column; reading it is :func:`n2m.manifest.is_holdout`."""
    return math.floor((index + 1) * fraction + 1e-9) > math.floor(index * fraction + 1e-9)


def choose_spec(config: CorpusConfig, index: int) -> TrackSpec:
    """Ground truth of track ``index``: style and lead from balanced decks, the rest drawn from the style's tables."""
    style_id = _deal(config.seed, index, tuple(STYLES), "style")
    lead = _deal(config.seed, index, MELODIC, "lead")
    style = STYLES[style_id]
    rng = track_rng(config.seed, index, "spec")
    mood = style.moods[int(rng.integers(len(style.moods)))]
    energy = MOODS[mood].energy
    mode = "minor" if rng.random() < MOODS[mood].minor else "major"
    tonic = int(rng.integers(12))
    position = float(np.clip(0.5 + 0.25 * energy + rng.normal(0.0, 0.22), 0.0, 1.0))
    bpm = int(round(style.bpm[0] + position * (style.bpm[1] - style.bpm[0])))
    duration = round(float(rng.uniform(config.min_seconds, config.max_seconds)), 2)
    chords = _weighted(rng, style.chords, exclude=lead)
    bass = _weighted(rng, style.basses)
    return TrackSpec(style_id, mood, tonic, mode, bpm, duration, lead, chords, bass)


def track_id(config: CorpusConfig, index: int) -> str:
    return f"synth{config.seed}-{index:05d}"


def make_track(config: CorpusConfig, index: int, out_dir: str) -> tuple[dict[str, Any], dict[str, float]]:
    """Compose, render and write track ``index``. Returns its manifest row and timings (seconds)."""
    start = time.perf_counter()
    spec = choose_spec(config, index)
    samples = render(compose(spec, track_rng(config.seed, index, "compose")), spec, track_rng(config.seed, index, "render"))
    synthesised = time.perf_counter()
    fmt = config.formats[index % len(config.formats)]
    data = encode_track(samples, fmt, serial=zlib.crc32(track_id(config, index).encode()))
    rel = f"{AUDIO_DIR}/{track_id(config, index)}.{fmt}"
    write_bytes_atomic(str(Path(out_dir) / rel), data)
    text = track_rng(config.seed, index, "text")
    style = STYLES[spec.style]
    row = {
        "track_id": track_id(config, index),
        "path": rel,
        "title": captions.title(text),
        "artist": captions.artist(text),
        "caption": captions.caption(spec, text),
        "tags": captions.tags(spec),
        "style": style.label,
        "mood": spec.mood,
        "bpm": spec.bpm,
        "meter": f"{style.meter}/4",
        "key": key_name(spec.tonic),
        "mode": spec.mode,
        "instruments": captions.instrument_labels(spec),
        "parts": {"melody": INSTRUMENTS[spec.lead].label, "chords": INSTRUMENTS[spec.chords].label,
                  "bass": INSTRUMENTS[spec.bass].label, "drums": style.kit},
        "duration_s": round(samples.shape[1] / SAMPLE_RATE, 3),
        "sample_rate": SAMPLE_RATE,
        "format": fmt,
        "holdout": chosen_for_holdout(index, config.holdout),
    }
    return row, {"synth_s": synthesised - start, "encode_s": time.perf_counter() - synthesised, "bytes": len(data)}


def _make_star(args: tuple[CorpusConfig, int, str]) -> tuple[dict[str, Any], dict[str, float]]:
    return make_track(*args)


def generate(config: CorpusConfig, out_dir: str | os.PathLike, tracks: int, workers: int = 1,
             progress: bool = True) -> dict[str, Any]:
    """Write ``tracks`` tracks and ``manifest.jsonl`` under ``out_dir``; return a summary (counts, hours, timings)."""
    from tqdm import tqdm

    out = Path(out_dir)
    (out / AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    jobs = [(config, index, str(out)) for index in range(tracks)]
    start = time.perf_counter()
    rows, timings = [], []
    with _mapper(workers) as mapper:
        for row, timing in tqdm(mapper(_make_star, jobs), total=tracks, desc="synth", unit="track", disable=not progress):
            rows.append(row)
            timings.append(timing)
    wall = time.perf_counter() - start
    write_manifest(out / MANIFEST, rows)
    seconds = sum(row["duration_s"] for row in rows)
    return {
        "tracks": len(rows),
        "audio_hours": seconds / 3600.0,
        "holdout": sum(row["holdout"] for row in rows),
        "formats": dict(sorted(Counter(row["format"] for row in rows).items())),
        "styles": dict(sorted(Counter(row["style"] for row in rows).items())),
        "wall_s": wall,
        "x_realtime": seconds / wall if wall > 0 else float("inf"),
        "synth_s": sum(t["synth_s"] for t in timings),
        "encode_s": sum(t["encode_s"] for t in timings),
        "bytes": sum(t["bytes"] for t in timings),
    }


@contextlib.contextmanager
def _mapper(workers: int):
    """An ordered ``map(fn, items)`` over ``workers`` processes, or in this process when ``workers`` is 1."""
    if workers <= 1:
        yield map
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield lambda fn, items: pool.imap(fn, items, chunksize=1)


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    """One JSON object per line, in track order, written atomically."""
    write_bytes_atomic(str(path), "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8"))


def read_manifest(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The rows of a corpus' ``manifest.jsonl``, in track order (:func:`n2m.manifest.read_rows`)."""
    return iter(read_rows(path))


# ---------------------------------------------------------------------------------------------------------------------
# Encoding; Ogg streams with a fixed serial number (libsndfile draws a random one, which would make files differ run to run)



def encode_track(samples: np.ndarray, fmt: str, serial: int) -> bytes:
    """Bytes of ``[C, T]`` audio in ``fmt`` (wav, flac, ogg, mp3), identical for identical input.

    libsndfile gives each Ogg stream a random serial number; it is replaced by ``serial``.
    """
    data = encode(samples, SAMPLE_RATE, fmt.upper())
    return stable_ogg(data, serial) if fmt == "ogg" else data


_REVERSED_BITS = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def ogg_crc(page: bytes) -> int:
    """Ogg page CRC (RFC 3533: polynomial 0x04C11DB7, initial value 0, not reflected) via zlib's reflected CRC-32."""
    mirrored = page.translate(_REVERSED_BITS)
    reflected = zlib.crc32(mirrored) ^ zlib.crc32(bytes(len(page)))  # register after `mirrored`, started at 0
    return int(f"{reflected:032b}"[::-1], 2)


def stable_ogg(data: bytes, serial: int) -> bytes:
    """Rewrite every page's stream serial number to ``serial`` and recompute the page checksums."""
    out, pos = bytearray(), 0
    while pos < len(data):
        if data[pos : pos + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {pos}")
        segments = data[pos + 26]
        end = pos + 27 + segments + sum(data[pos + 27 : pos + 27 + segments])
        page = bytearray(data[pos:end])
        page[14:18] = (serial & 0xFFFFFFFF).to_bytes(4, "little")
        page[22:26] = bytes(4)
        page[22:26] = ogg_crc(bytes(page)).to_bytes(4, "little")
        out += page
        pos = end
    return bytes(out)
