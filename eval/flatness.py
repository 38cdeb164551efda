"""Spectral flatness: does a clip sound like audio or like broadband noise?

The spectral flatness of a spectrum is Wiener entropy, the geometric over the arithmetic mean of its power
(Johnston 1988, "Transform coding of audio signals using perceptual noise criteria", IEEE JSAC 6(2), eq. 3; Dubnov
2004, "Generalization of spectral flatness measure for non-Gaussian linear processes", IEEE SPL 11(8)):
``SF = exp(mean_k log P_k) / mean_k P_k``, ``0 <= SF <= 1``. As in the MPEG-7 AudioSpectralFlatness descriptor
(ISO/IEC 15938-4: quarter-octave bands from 250 Hz by default), it is taken per band, here octaves: 250-500 Hz,
0.5-1, 1-2, 2-4 and 4-7 kHz. A frame's value is the band values' mean weighted by band energy,

    SF = sum_b E_b SF_b / sum_b E_b = sum_b N_b GM_b / sum_b N_b AM_b    (N_b bins, GM_b / AM_b their means),

so quiet bands (a dither floor, leakage) weigh little. Why bands: a whole-band ratio also falls with the spectrum's
tilt, so coloured noise (an undertrained model's, falling by 36 dB from 50 Hz to 5 kHz, read 0.03 over the whole band,
like music) passes for audio; within an octave that noise is flat again (0.53 here) while harmonics stay peaky.

A clip is taken mono (channel mean), resampled to 16 kHz with :func:`n2m.audio.resample` (soxr HQ), cut into periodic
Hann frames of 2,048 samples (128 ms) with a hop of 1,024 (64 ms); ``P_k = |rfft|^2``, bins 32 .. 895 (7.8125 Hz
each). The top edge, 7 kHz, stays below the transition band of a resampler down to 16 kHz (soxr HQ passes up to
~7.5 kHz; beyond it, even white noise from a 24 kHz file falls by 30 dB and more and would read as peaky). Frames whose
level in those bands is below -60 dBFS RMS are skipped (silence, or sound only outside the bands); the clip's value is
the median over the remaining frames (None when there are none).

White Gaussian noise: each interior bin of its windowed DFT is a circular complex Gaussian, so ``P_k`` is exponential
with mean mu and ``E[log P_k] = log mu - gamma`` (gamma: the Euler-Mascheroni constant); SF tends to
``exp(-gamma) = 0.5615`` as the bins per band grow (``exp(-gamma) (1 + 5 c / 864)``, c = 35/36 for the Hann window's
bin correlations, to second order: 0.5647). A pure tone puts its band's power into a few bins: SF ~ 0. Music sits far
below noise: harmonics and onsets make each band peaky.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from n2m import audio

RATE = 16000
FRAME = 2048
HOP = 1024
FLOOR_DB = -60.0
EDGES_HZ = (250.0, 500.0, 1000.0, 2000.0, 4000.0, 7000.0)  # octave bands, the last one cut at 7 kHz
EDGES = tuple(int(round(hz * FRAME / RATE)) for hz in EDGES_HZ)  # rfft bins 32, 64, 128, 256, 512, 896
NOISE = math.exp(-0.5772156649015329)  # exp(-gamma): white noise's flatness in the limit of many bins per band
_WINDOW_POWER = 3.0 / 8.0  # mean of the squared periodic Hann window
_CHUNK = 1024  # frames transformed at once (bounded memory on long files)
_TINY = 1e-30  # power floor against log(0), far below 16-bit quantisation noise


def frame_flatness(wave: np.ndarray) -> np.ndarray:
    """Mono ``[T]`` at 16 kHz -> ``[F, 2]`` float64: each full frame's band-weighted spectral flatness and its level
    in the bands (dBFS RMS, by Parseval); ``F = 1 + (T - 2048) // 1024``, 0 rows when ``T < 2048``."""
    x = np.asarray(wave, np.float64).reshape(-1)
    if x.size < FRAME:
        return np.zeros((0, 2))
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP]  # [F, FRAME], a view
    window = np.hanning(FRAME + 1)[:-1]  # periodic Hann
    starts = np.array(EDGES[:-1]) - EDGES[0]
    counts = np.diff(EDGES)  # [B] bins per band
    out = np.empty((len(frames), 2))
    for start in range(0, len(frames), _CHUNK):
        chunk = frames[start:start + _CHUNK]  # [f, FRAME]
        power = np.abs(np.fft.rfft(chunk * window, axis=1)[:, EDGES[0]:EDGES[-1]]) ** 2  # [f, 864]
        energy = np.add.reduceat(power, starts, axis=1)  # [f, B]
        geometric = np.exp(np.add.reduceat(np.log(np.maximum(power, _TINY)), starts, axis=1) / counts)  # [f, B]
        total = energy.sum(axis=1)
        rows = slice(start, start + len(chunk))
        out[rows, 0] = (counts * geometric).sum(axis=1) / np.maximum(total, _TINY)
        out[rows, 1] = 10.0 * np.log10(np.maximum(2.0 * total / (FRAME**2 * _WINDOW_POWER), _TINY))
    return out


def clip_flatness(frames: np.ndarray, floor_db: float = FLOOR_DB) -> float | None:
    """The median flatness of the frames (``[F, 2]`` from :func:`frame_flatness`) whose band level is at or above
    ``floor_db``; None when none is."""
    loud = frames[frames[:, 1] >= floor_db, 0] if len(frames) else frames[:0, 0]
    return float(np.median(loud)) if loud.size else None


def spectral_flatness(samples: np.ndarray, sample_rate: int) -> float | None:
    """A clip's spectral flatness (module docstring): ``[C, T]`` or ``[T]`` at ``sample_rate``; None for silence or
    a clip shorter than one frame."""
    x = np.asarray(samples, np.float32)
    mono = audio.downmix(x if x.ndim == 2 else x[None])  # [1, T]
    return clip_flatness(frame_flatness(audio.resample(mono, sample_rate, RATE)[0]))


class FlatnessMeter:
    """Spectral flatness in the shape of an :class:`n2m.eval.embeddings.Embedder`, so that
    :func:`n2m.eval.audio_sets.embed_files` reads, decodes, crops, resamples, caches by file content and records failures
    exactly as it does for the embedding models. Its "embeddings" are :func:`frame_flatness`'s ``[F, 2]``; a clip's
    vector is ``[1]``: :func:`clip_flatness`, NaN when every frame is below the floor."""

    name = "flatness"
    model_id = "spectral_flatness:octaves-v1"
    sample_rate = RATE
    min_seconds = FRAME / RATE
    settings: dict[str, Any] = {"frame": FRAME, "hop": HOP, "window": "hann (periodic)", "band_edges_hz": EDGES_HZ,
                                "weights": "band energy"}

    def embed(self, wave: np.ndarray) -> np.ndarray:
        return frame_flatness(wave).astype(np.float32)

    def fad_frames(self, raw: np.ndarray) -> np.ndarray:
        return raw

    def clip_embedding(self, raw: np.ndarray) -> np.ndarray:
        value = clip_flatness(np.asarray(raw, np.float64))
        return np.array([np.nan if value is None else value], np.float32)


def nearer_noise(median: float, flattest: float) -> bool:
    """Whether clips of median flatness ``median`` sit nearer white noise (:data:`NOISE`) than the flattest real track
    (``flattest``): ``median > (flattest + NOISE) / 2``. Above ``flattest`` alone a clip is noisier than every real
    track; past this midpoint it is noise more than music (the demo's step-0 samples read 0.565, a generator trained
    for minutes 0.14 against real tracks' 0.08)."""
    return median > (flattest + NOISE) / 2.0


def median_interval(values: np.ndarray, level: float = 0.95) -> tuple[float | None, float | None]:
    """Distribution-free interval of the median of ``values`` ``[N]``: order statistics ``x_(k) .. x_(N+1-k)`` with
    the largest k whose coverage ``1 - 2 P(B <= k - 1)``, B ~ Binomial(N, 1/2), is at least ``level`` (Conover 1999,
    Practical Nonparametric Statistics, 3rd ed., Section 3.2). Exact for continuous data, unlike a percentile
    bootstrap of a median over few clips. ``(None, None)`` when no k reaches ``level`` (N <= 5 at 95%)."""
    v = np.sort(np.asarray(values, np.float64))
    n = v.size
    tail, k = 0.0, 0
    while k < n // 2:
        tail += math.comb(n, k) / 2.0**n  # P(B <= k)
        if 2 * tail > 1.0 - level:
            break
        k += 1
    return (float(v[k - 1]), float(v[n - k])) if k else (None, None)
