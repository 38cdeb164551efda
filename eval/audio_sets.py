"""Sets of audio files (directories, globs, list files) and their embeddings, with bad files recorded, never dropped
silently.

Each file's id is its stem (``abc.wav`` -> ``abc``): that is how generated audio pairs with its prompt and its reference,
never the order of a directory listing. Per file: read bytes and hash them (the cache key), and only on a cache miss
decode, downmix to mono, crop, band-limit and resample to the model's rate, then embed.
"""

from __future__ import annotations

import glob
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from eval.cache import EmbeddingCache
from eval.embeddings import Embedder
from n2m import audio
from n2m.audio import AudioError
from n2m.errors import UserError
from n2m.provenance import sha1_bytes

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".aif", ".webm")


# ---------------------------------------------------------------------------------------------------------------------
# Listing


def list_audio(spec: str | Path | list[str]) -> list[Path]:
    """Audio files of a directory (recursive), a glob, a ``.txt`` list (one path a line) or a list of those, sorted."""
    if isinstance(spec, list | tuple):
        return sorted({p for item in spec for p in list_audio(item)})
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES]
    elif path.is_file() and path.suffix.lower() == ".txt":
        base = path.parent
        lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        files = [p if p.is_absolute() else base / p for p in map(Path, lines)]
    elif path.is_file():
        files = [path]
    elif any(ch in text for ch in "*?["):
        files = [Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file()]
    else:
        raise UserError(f"no such audio directory, file or glob: {text}")
    return sorted(files)


def by_id(files: list[Path]) -> dict[str, Path]:
    """``{stem: path}``; two files with the same stem are ambiguous and refused."""
    out: dict[str, Path] = {}
    for file in files:
        if file.stem in out:
            raise UserError(f"two audio files share the id {file.stem!r}: {out[file.stem]} and {file}")
        out[file.stem] = file
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Preprocessing


@dataclass(frozen=True)
class Preprocess:
    """Applied before the model's own resampling: keep the middle ``crop_s`` seconds of longer clips (Noise2Music
    Section 5 scores the middle 10 s of 30 s outputs), then pass through ``band_rate`` Hz (e.g. 16 kHz, as the paper
    evaluated) when given. Resampling is soxr HQ."""

    crop_s: float | None = None
    band_rate: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"crop_s": self.crop_s, "band_rate": self.band_rate, "resampler": "soxr-HQ", "mono": "mean"}

    def apply(self, decoded: audio.Decoded, target_rate: int) -> np.ndarray:
        """Decoded ``[C, T]`` -> mono float32 ``[T']`` at ``target_rate``."""
        mono = audio.downmix(decoded.samples)
        rate = decoded.sample_rate
        if self.crop_s is not None:
            keep = int(round(self.crop_s * rate))
            if mono.shape[1] > keep:
                start = (mono.shape[1] - keep) // 2
                mono = mono[:, start:start + keep]
        if self.band_rate is not None and self.band_rate < rate:
            mono = audio.resample(mono, rate, self.band_rate)
            rate = self.band_rate
        return audio.resample(mono, rate, target_rate)[0]


# ---------------------------------------------------------------------------------------------------------------------
# Embedding a set


@dataclass
class Failure:
    path: str
    reason: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason, "message": self.message}


@dataclass
class EmbeddedSet:
    """Embeddings of the usable files of a set and the excluded ones: ``ids[i]`` -> FAD frames ``frames[i]``
    ``[F_i, D]`` and the clip vector ``clips[i]`` ``[D]``."""

    ids: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    clips: list[np.ndarray] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=lambda: Counter())
    cache_hits: int = 0

    def all_frames(self) -> np.ndarray:
        """``[sum F_i, D]`` in id order (the statistics do not depend on it)."""
        return np.concatenate(self.frames) if self.frames else np.zeros((0, 0), np.float32)

    def clips_by_id(self) -> dict[str, np.ndarray]:
        return dict(zip(self.ids, self.clips))

    def summary(self) -> dict[str, Any]:
        reasons = Counter(f.reason for f in self.failures)
        return {"files": len(self.ids) + len(self.failures), "used": len(self.ids), "excluded": len(self.failures),
                "excluded_by_reason": dict(sorted(reasons.items())), "frames": int(sum(len(f) for f in self.frames)),
                "cache_hits": self.cache_hits, "excluded_files": [f.as_dict() for f in self.failures]}


def embed_files(files: list[Path], embedder: Embedder, preprocess: Preprocess, cache_root: str | Path | None,
                desc: str = "embedding", progress: bool = True) -> EmbeddedSet:
    """Embed every file; a file that cannot be read, decoded or is shorter than the model's minimum is recorded in
    ``failures`` with its reason and excluded. ``timings`` splits the wall time into read/hash, decode, resample,
    forward and cache."""
    settings = {**embedder.settings, **preprocess.as_dict()}
    cache = EmbeddingCache(cache_root, embedder.model_id, settings)
    out = EmbeddedSet()
    clock = time.perf_counter
    for path in tqdm(files, desc=desc, unit="file", disable=not progress, leave=False):
        try:
            t0 = clock()
            data = audio.read_bytes(path)
            digest = sha1_bytes(data)
            t1 = clock()
            out.timings["read_hash"] += t1 - t0
            frames = cache.get(digest)
            t2 = clock()
            out.timings["cache"] += t2 - t1
            if frames is None:
                decoded = audio.decode(data, name=str(path))
                t3 = clock()
                wave = preprocess.apply(decoded, embedder.sample_rate)
                t4 = clock()
                if wave.shape[0] < embedder.min_seconds * embedder.sample_rate:
                    raise AudioError("too_short", f"{path}: {wave.shape[0] / embedder.sample_rate:.3f} s after "
                                     f"preprocessing, the model needs {embedder.min_seconds:.3f} s")
                frames = embedder.embed(wave)
                t5 = clock()
                if frames.ndim != 2 or frames.shape[0] == 0 or not np.isfinite(frames).all():
                    raise AudioError("decode_error", f"{path}: the model gave unusable embeddings {frames.shape}")
                cache.put(digest, frames)
                out.timings["decode"] += t3 - t2
                out.timings["resample"] += t4 - t3
                out.timings["forward"] += t5 - t4
                out.timings["cache"] += clock() - t5
            else:
                out.cache_hits += 1
        except AudioError as err:
            out.failures.append(Failure(str(path), err.reason, err.message))
            continue
        out.ids.append(path.stem)
        out.paths.append(str(path))
        out.hashes.append(digest)
        out.frames.append(np.asarray(embedder.fad_frames(frames), np.float32))
        out.clips.append(np.asarray(embedder.clip_embedding(frames), np.float32))
    return out
