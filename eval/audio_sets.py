"""Sets of audio files (directories, globs, list files) and their embeddings, with bad files recorded, never dropped
silently.

Each file's id is its stem (``abc.wav`` -> ``abc``): that is how generated audio pairs with its prompt and its reference,
never the order of a directory listing. Per file: read bytes and hash them (the cache key), and only on a cache miss
decode, downmix to mono, crop, band-limit and resample to the model's rate, then embed.
"""

from __future__ import annotations

import glob
import json
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from n2m import audio
from n2m.audio import AudioError
from n2m.errors import UserError
from n2m.eval.cache import EmbeddingCache
from n2m.eval.embeddings import Embedder
from n2m.progress import bar as progress_bar
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
        skip = _intermediates(path)
        files = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES and p not in skip]
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


def _intermediates(root: Path) -> set[Path]:
    """Files that ``n2m sample --keep-stages`` names as intermediate stage outputs in its sidecars (``{id}.16k.wav``
    next to ``{id}.wav``): they are not outputs to evaluate."""
    out: set[Path] = set()
    for sidecar in root.rglob("*.json"):
        try:
            names = json.loads(sidecar.read_text()).get("intermediates") or []
        except (OSError, ValueError, AttributeError):
            continue
        out.update(sidecar.parent / str(name) for name in names if isinstance(name, str))
    return out


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

    def rekeyed(self, key_of: dict[str, str]) -> EmbeddedSet:
        """The same set with each id replaced by ``key_of[path]`` (e.g. takes keyed ``folder/stem``)."""
        return EmbeddedSet([key_of[p] for p in self.paths], list(self.paths), list(self.hashes), list(self.frames),
                           list(self.clips), list(self.failures), Counter(self.timings), self.cache_hits)

    def __add__(self, other: EmbeddedSet) -> EmbeddedSet:
        """Both sets, ``self``'s clips first (ids must differ)."""
        if set(self.ids) & set(other.ids):
            raise ValueError(f"the two sets share ids: {sorted(set(self.ids) & set(other.ids))[:3]}")
        return EmbeddedSet(self.ids + other.ids, self.paths + other.paths, self.hashes + other.hashes,
                           self.frames + other.frames, self.clips + other.clips, self.failures + other.failures,
                           Counter(self.timings) + Counter(other.timings), self.cache_hits + other.cache_hits)

    def summary(self) -> dict[str, Any]:
        reasons = Counter(f.reason for f in self.failures)
        return {"files": len(self.ids) + len(self.failures), "used": len(self.ids), "excluded": len(self.failures),
                "excluded_by_reason": dict(sorted(reasons.items())), "frames": int(sum(len(f) for f in self.frames)),
                "cache_hits": self.cache_hits, "excluded_files": [f.as_dict() for f in self.failures]}


@dataclass
class _Prepared:
    """One file after the work that needs no model: its hash, cached frames or the model-ready waveform, or a failure."""

    path: Path
    digest: str = ""
    cached: np.ndarray | None = None
    wave: np.ndarray | None = None
    failure: Failure | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _prepare(path: Path, embedder: Embedder, preprocess: Preprocess, cache: EmbeddingCache) -> _Prepared:
    """Read + hash, look up the cache, and on a miss decode and preprocess (runs in a worker thread: libsndfile,
    soxr and hashlib release the GIL)."""
    item = _Prepared(path)
    clock = time.perf_counter
    try:
        t0 = clock()
        data = audio.read_bytes(path)
        item.digest = sha1_bytes(data)
        t1 = clock()
        item.cached = cache.get(item.digest)
        t2 = clock()
        item.timings = {"read_hash": t1 - t0, "cache": t2 - t1}
        if item.cached is not None:
            return item
        decoded = audio.decode(data, name=str(path))
        t3 = clock()
        item.wave = preprocess.apply(decoded, embedder.sample_rate)
        item.timings.update(decode=t3 - t2, resample=clock() - t3)
        if item.wave.shape[0] < embedder.min_seconds * embedder.sample_rate:
            raise AudioError("too_short", f"{path}: {item.wave.shape[0] / embedder.sample_rate:.3f} s after "
                             f"preprocessing, the model needs {embedder.min_seconds:.3f} s")
    except AudioError as err:
        item.failure = Failure(str(path), err.reason, err.message)
    return item


def _prepared(files: list[Path], embedder: Embedder, preprocess: Preprocess, cache: EmbeddingCache,
              workers: int) -> Iterator[_Prepared]:
    """Prepared files in input order, at most ``2 * workers`` ahead of the consumer (bounded memory)."""
    if workers <= 0:
        for path in files:
            yield _prepare(path, embedder, preprocess, cache)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="n2m-eval-io") as pool:
        pending: deque[Future] = deque()
        queue = iter(files)
        for path in queue:
            pending.append(pool.submit(_prepare, path, embedder, preprocess, cache))
            if len(pending) >= 2 * workers:
                break
        while pending:
            item = pending.popleft().result()
            next_path = next(queue, None)
            if next_path is not None:
                pending.append(pool.submit(_prepare, next_path, embedder, preprocess, cache))
            yield item


def embed_files(files: list[Path], embedder: Embedder, preprocess: Preprocess, cache_root: str | Path | None,
                desc: str = "embedding", progress: bool = True, workers: int = 2) -> EmbeddedSet:
    """Embed every file; a file that cannot be read, decoded or is shorter than the model's minimum is recorded in
    ``failures`` with its reason and excluded. Reading, hashing, decoding and resampling run in ``workers`` threads
    ahead of the model (0: inline). ``timings``: per-stage seconds summed over files (``read_hash``, ``cache``,
    ``decode``, ``resample`` in the workers), ``forward`` and ``wait`` (the model thread idle, waiting for input)."""
    settings = {**embedder.settings, **preprocess.as_dict()}
    cache = EmbeddingCache(cache_root, embedder.model_id, settings)
    out = EmbeddedSet()
    clock = time.perf_counter
    stream = _prepared(files, embedder, preprocess, cache, workers)
    bar = progress_bar(total=len(files), desc=desc, unit="file", disable=not progress, leave=False)
    while True:
        t0 = clock()
        item = next(stream, None)
        out.timings["wait"] += clock() - t0
        if item is None:
            break
        bar.update()
        for key, value in item.timings.items():
            out.timings[key] += value
        if item.failure is not None:
            out.failures.append(item.failure)
            continue
        frames = item.cached
        if frames is None:
            t1 = clock()
            try:
                frames = embedder.embed(item.wave)
            except AudioError as err:
                out.failures.append(Failure(str(item.path), err.reason, err.message))
                continue
            t2 = clock()
            out.timings["forward"] += t2 - t1
            if frames.ndim != 2 or frames.shape[0] == 0 or not np.isfinite(frames).all():
                out.failures.append(Failure(str(item.path), "decode_error",
                                            f"{item.path}: the model gave unusable embeddings {frames.shape}"))
                continue
            cache.put(item.digest, frames)
            out.timings["cache"] += clock() - t2
        else:
            out.cache_hits += 1
        out.ids.append(item.path.stem)
        out.paths.append(str(item.path))
        out.hashes.append(item.digest)
        out.frames.append(np.asarray(embedder.fad_frames(frames), np.float32))
        out.clips.append(np.asarray(embedder.clip_embedding(frames), np.float32))
    bar.close()
    return out
