"""The computations of ``n2m eval memorization``: an alignment-robust audio match, nearest neighbours by embedding,
calibrated thresholds, and the clips of a build split into training and held-out.

**Audio match.** Each clip becomes chroma frames (:func:`n2m.melody.chroma` at :data:`MATCH_FRAME_RATE` frames/s,
in dB floored at :data:`n2m.melody.SILENCE_DB`, centred per frame and scaled to unit length; silent frames are zero).
The match of a generated clip ``q`` ``[F_q, 12]`` with a training clip ``r`` ``[F_r, 12]`` is the best mean frame
cosine over every time offset ``tau`` whose overlap holds at least ``min(MIN_OVERLAP_S, half the shorter clip)``::

    match(q, r) = max_tau  1 / n(tau) * sum_t  q_t . r_(t + tau),     n(tau) = frames where both exist

computed for all offsets at once as a cross-correlation by FFT. Half the shorter clip: a generated clip copied from
anywhere in a source overlaps one of its consecutive training clips by at least that much. A copy shifted in time or
re-encoded lossily (MP3, Ogg: pitch content survives) keeps a match near 1; a change of tempo or key does not (the
match is not built for it). Chroma, not mel frames: measured on 16 n2m synth tracks built into 5 s clips (42 training,
24 held-out), three 5 s copies shifted by 1.7 s and re-encoded to MP3/Ogg, and four 5 s excerpts of unseen tracks,
chroma frames gave held-out max 0.817, copies >= 0.997, unseen <= 0.671; mean-normalised log-mel frames (64 bands,
same framing) gave 0.891, >= 0.989 and <= 0.858: a margin half as wide. Pitch content is also what a copied melody
keeps when the model re-renders it.

**Embedding.** Clip vectors of an eval embedding (:mod:`n2m.eval.embeddings`), centred on the mean of the training clips
(the shared offset of non-negative features would make every cosine high), cosine similarity.

**Thresholds** (:func:`conformal_threshold`): scores of held-out real clips against the training clips calibrate each
view; none of the generated clips' scores is used.
"""

from __future__ import annotations

import json
import math
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np

from n2m import melody
from n2m.layout import verify_shard
from n2m.manifest import clip_is_holdout
from n2m.storage import Store

MATCH_VERSION = 1
MATCH_FRAME_RATE = 10.0
MIN_OVERLAP_S = 5.0
_PAIR_BUDGET = 4_000_000  # complex spectrum cells per block of the batched cross-correlation (~64 MB)


# ---------------------------------------------------------------------------------------------------------------------
# Chroma frames as an eval "embedding" (so n2m.eval.audio_sets decodes, caches and records failures for them)


class MatchFrames:
    """Chroma frames for the audio match, shaped like an :class:`n2m.eval.embeddings.Embedder`: ``embed`` gives unit
    frames ``[F, 12]`` (cached by file content like any embedding)."""

    name = "chroma-match"
    model_id = f"n2m.melody.chroma:v{MATCH_VERSION}"
    sample_rate = melody.ANALYSIS_RATE
    min_seconds = 1.0

    def __init__(self) -> None:
        self.settings = {"frame_rate": MATCH_FRAME_RATE, "floor_db": melody.SILENCE_DB, "n_fft": melody.N_FFT,
                         "hop": melody.HOP, "band_hz": [melody.FMIN, melody.FMAX], "frames": "dB, centred, unit"}

    def embed(self, wave: np.ndarray) -> np.ndarray:
        power = melody.chroma(wave, self.sample_rate, MATCH_FRAME_RATE).T.astype(np.float64)  # [F, 12]
        db = 10.0 * np.log10(np.maximum(power, 10.0 ** (melody.SILENCE_DB / 10.0)))
        centred = db - db.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(centred, axis=1, keepdims=True)
        return np.where(norm > 1e-9, centred / np.maximum(norm, 1e-9), 0.0).astype(np.float32)

    def fad_frames(self, raw: np.ndarray) -> np.ndarray:
        return raw

    def clip_embedding(self, raw: np.ndarray) -> np.ndarray:
        return raw.mean(axis=0)


# ---------------------------------------------------------------------------------------------------------------------
# Scores


def match_scores(queries: list[np.ndarray], refs: list[np.ndarray],
                 min_overlap: int = round(MIN_OVERLAP_S * MATCH_FRAME_RATE)) -> tuple[np.ndarray, np.ndarray]:
    """Best mean frame cosine over all offsets for every pair: ``(scores [Q, R], lags [Q, R])``.

    ``queries[i]`` ``[F_i, D]`` and ``refs[j]`` ``[F_j, D]`` hold unit (or zero) frames. ``lags[i, j] = tau``: frame
    ``t`` of the query lines up with frame ``t + tau`` of the reference. Offsets count when their overlap has at least
    ``min(min_overlap, ceil(min(F_i, F_j) / 2))`` frames. Cross-correlations by FFT, in blocks of references (bounded
    memory).
    """
    if not queries or not refs:
        return np.zeros((len(queries), len(refs))), np.zeros((len(queries), len(refs)), np.int64)
    fq = np.array([len(q) for q in queries])
    fr = np.array([len(r) for r in refs])
    nfft = 1 << int(fq.max() + fr.max() - 2).bit_length()
    spectra_q = np.conj(np.fft.rfft(_stack(queries, int(fq.max())), nfft, axis=1))  # [Q, nf, D]
    lags = np.arange(-(int(fq.max()) - 1), int(fr.max()))
    scores = np.full((len(queries), len(refs)), -np.inf)
    best = np.zeros((len(queries), len(refs)), np.int64)
    block = max(1, _PAIR_BUDGET // (len(queries) * spectra_q.shape[1]))
    for start in range(0, len(refs), block):
        part = slice(start, min(len(refs), start + block))
        spectra_r = np.fft.rfft(_stack(refs[part], int(fr.max())), nfft, axis=1)  # [b, nf, D]
        corr = np.fft.irfft(np.einsum("qfd,bfd->qbf", spectra_q, spectra_r), nfft, axis=2)[:, :, lags % nfft]
        a, b = fq[:, None, None], fr[part][None, :, None]
        overlap = np.minimum(a, b - lags) - np.maximum(0, -lags)  # [Q, b, L]
        valid = overlap >= np.minimum((np.minimum(a, b) + 1) // 2, min_overlap)
        mean = np.where(valid, corr / np.maximum(overlap, 1), -np.inf)
        index = mean.argmax(axis=2)
        scores[:, part] = np.take_along_axis(mean, index[..., None], axis=2)[..., 0]
        best[:, part] = lags[index]
    return scores, best


def _stack(frames: list[np.ndarray], length: int) -> np.ndarray:
    """Zero-padded ``[N, length, D]`` float64."""
    out = np.zeros((len(frames), length, frames[0].shape[1]), np.float64)
    for i, f in enumerate(frames):
        out[i, : len(f)] = f
    return out


def cosine_scores(queries: np.ndarray, refs: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Cosine similarity ``[Q, R]`` of clip vectors ``[Q, D]`` and ``[R, D]`` after subtracting ``centre`` ``[D]``."""
    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64) - centre
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    return unit(queries) @ unit(refs).T


@dataclass(frozen=True)
class Threshold:
    """A view's threshold: scores strictly above ``value`` are flagged. ``source`` is ``calibrated`` (``rank``-th
    smallest of ``n`` held-out scores, false-positive ``bound``) or ``fixed`` (given by the user)."""

    value: float
    source: str
    n: int = 0
    rank: int = 0
    alpha: float | None = None
    bound: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "source": self.source, "heldout_clips": self.n, "rank": self.rank,
                "alpha": self.alpha, "false_positive_bound": self.bound}


def conformal_threshold(heldout: np.ndarray, alpha: float) -> Threshold:
    """The split-conformal threshold (Vovk et al. 2005; Angelopoulos & Bates 2021, "A Gentle Introduction to
    Conformal Prediction", section 1): the ``k = ceil((n + 1)(1 - alpha))``-th smallest of ``n`` held-out scores.

    If a generated clip's score is exchangeable with the held-out ones (a model that does not copy makes clips that
    relate to the training set as unseen real tracks do), ``P(score > threshold) <= (n + 1 - k) / (n + 1) <= alpha``.
    With fewer than ``1 / alpha - 1`` held-out clips ``k > n``: the threshold is their maximum and the bound
    ``1 / (n + 1)``.
    """
    scores = np.sort(np.asarray(heldout, np.float64))
    n = len(scores)
    if n == 0:
        raise ValueError("no held-out scores to calibrate on")
    k = min(n, math.ceil((n + 1) * (1.0 - alpha) - 1e-12))
    return Threshold(float(scores[k - 1]), "calibrated", n, k, alpha, (n + 1 - k) / (n + 1))


# ---------------------------------------------------------------------------------------------------------------------
# The clips of a build


@dataclass(frozen=True)
class BuildClip:
    """One clip of a build and its role: ``train`` (in the training splits, not excluded) or ``heldout``."""

    key: str
    split: str
    shard: str
    role: str
    source_uri: str
    offset_s: float
    duration_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "split": self.split, "shard": self.shard, "source_uri": self.source_uri,
                "offset_s": self.offset_s, "duration_s": self.duration_s}


@dataclass
class BuildShard:
    """A committed shard's clips, extracted (``{key}.flac``) into a folder that lives while the shard is in use."""

    tar: str
    clips: list[BuildClip] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


@contextmanager
def open_shard(split: str, tar: str, train_splits: set[str], exclude_holdout: bool) -> Iterator[BuildShard]:
    """Check a shard against its marker (:func:`n2m.layout.verify_shard`), extract its clips into a temporary folder
    and yield them with their roles; the folder is removed afterwards."""
    verify_shard(tar)
    shard = BuildShard(tar)
    with TemporaryDirectory(prefix="n2m-memorization-") as tmp, Store(tar).open_read(tar) as raw, \
            tarfile.open(fileobj=raw, mode="r:") as archive:
        archive.extractall(tmp, filter="data")
        for meta_path in sorted(Path(tmp).glob("*.json")):
            flac = meta_path.with_suffix(".flac")
            if not flac.is_file():
                continue
            meta = json.loads(meta_path.read_text())
            role = "train" if split in train_splits and not (exclude_holdout and clip_is_holdout(meta)) else "heldout"
            shard.clips.append(BuildClip(meta_path.stem, split, Path(tar).name, role, str(meta.get("source_uri", "")),
                                         float(meta.get("offset_s") or 0.0), float(meta.get("duration_s") or 0.0)))
            shard.files.append(flac)
        yield shard
