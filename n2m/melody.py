"""Melody features: the dominant pitch class of each frame, a one-hot 12-bin chroma ``[12, F]`` at any frame rate.

The representation is MusicGen's melody condition (Copet et al. 2023, "Simple and Controllable Music Generation",
section 2.3): a chromagram reduced to its argmax per frame. Why this one and not a pitch contour (pYIN, CREPE):

- it works on full mixes: a pitch tracker assumes one voice and fails on chords, a chroma argmax degrades gracefully to
  "the strongest pitch class" (MusicGen separated the melody stem first; n2m has no separation model, so on a mix the
  strongest class is sometimes the bass or a chord tone, not the lead);
- it says *which notes*, not how they sound: no octave, no timbre, no loudness, so a generator conditioned on it has to
  choose register and instrumentation itself and cannot copy the training clip through its condition (MusicGen keeps
  only the argmax for this reason);
- it is cheap, deterministic and defined at any frame rate (a stage's rate, e.g. 3.2 kHz, or 50 frames/s).

Computation (every constant is a module constant below):

1. downmix to mono and resample to :data:`ANALYSIS_RATE` (soxr HQ);
2. short-time power spectrum: Hann window of :data:`N_FFT` samples (128 ms), hop :data:`HOP` (16 ms), frame ``j``
   centred at ``j * HOP`` (half a window of zeros at both ends), scaled so that the power of the in-band bins sums to
   the band's mean square (a sine of amplitude ``A`` gives ``A^2 / 2``, Parseval);
3. the power of each bin between :data:`FMIN` and :data:`FMAX` goes to the pitch class of its nearest equal-tempered
   semitone (A4 = 440 Hz; class 0 is C): ``round(12 log2(f / 440) + 69) mod 12``;
4. output frame ``k`` covers ``[k / frame_rate, (k + 1) / frame_rate)``; its chroma is the mean over the analysis
   frames centred in it (the nearest analysis frame when none is, i.e. above 62.5 frames/s). ``F = ceil(duration *
   frame_rate)``;
5. the argmax class is 1 where the frame's in-band mean square is at least :data:`SILENCE_DB` dBFS; quieter frames
   (silence, fades) are all zero: no melody.
"""

from __future__ import annotations

import math

import numpy as np

from n2m.audio import downmix, resample

ANALYSIS_RATE = 16_000
N_FFT = 2048
HOP = 256
FMIN = 130.81  # C3: below it the bass line dominates a mix
FMAX = 2093.0  # C7: above it mostly overtones, cymbals and noise
SILENCE_DB = -60.0
PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_BLOCK = 2048  # analysis frames per FFT block (bounded memory on long audio)


def _mono(wave: np.ndarray) -> np.ndarray:
    """``[T]`` or ``[C, T]`` -> float32 ``[1, T]``, refusing what is not audio."""
    x = np.asarray(wave, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] == 0 or x.shape[0] == 0:
        raise ValueError(f"melody features need a waveform [T] or [C, T] with samples, got shape {np.shape(wave)}")
    if not np.isfinite(x).all():
        raise ValueError("melody features need finite samples (NaN or infinity found)")
    return downmix(x) if x.shape[0] > 1 else x


def frame_count(samples: int, sample_rate: float, frame_rate: float) -> int:
    """``ceil(samples / sample_rate * frame_rate)``: frames of ``1 / frame_rate`` seconds covering every sample."""
    return max(1, math.ceil(samples * frame_rate / sample_rate - 1e-9))


def _pitch_class_matrix() -> tuple[slice, np.ndarray]:
    """The in-band rFFT bins and their ``[bins, 12]`` 0/1 assignment to pitch classes."""
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / ANALYSIS_RATE)
    lo, hi = int(np.searchsorted(freqs, FMIN)), int(np.searchsorted(freqs, FMAX, side="right"))
    classes = np.mod(np.round(12.0 * np.log2(freqs[lo:hi] / 440.0) + 69.0).astype(np.int64), 12)
    matrix = np.zeros((hi - lo, 12), np.float64)
    matrix[np.arange(hi - lo), classes] = 1.0
    return slice(lo, hi), matrix


def _analysis_chroma(mono: np.ndarray) -> np.ndarray:
    """Pitch-class power ``[J, 12]`` of the analysis frames of a 16 kHz signal ``[T]`` (mean-square units)."""
    window = np.hanning(N_FFT + 1)[:-1]  # periodic Hann
    scale = 2.0 / (N_FFT * float(np.sum(window**2)))
    band, matrix = _pitch_class_matrix()
    padded = np.pad(mono.astype(np.float64), (N_FFT // 2, N_FFT // 2))
    frames = 1 + mono.shape[0] // HOP
    out = np.empty((frames, 12), np.float64)
    for start in range(0, frames, _BLOCK):
        stop = min(frames, start + _BLOCK)
        index = (np.arange(start, stop) * HOP)[:, None] + np.arange(N_FFT)[None, :]
        spectrum = np.fft.rfft(padded[index] * window, axis=1)[:, band]
        out[start:stop] = (spectrum.real**2 + spectrum.imag**2) * scale @ matrix
    return out


def chroma(wave: np.ndarray, sample_rate: int, frame_rate: float) -> np.ndarray:
    """Pitch-class power per frame, float32 ``[12, F]``: the mean square of the in-band signal in each class (class 0
    is C), before the argmax of :func:`melody_features`. ``wave`` is ``[T]`` or ``[C, T]`` at ``sample_rate``."""
    if not (sample_rate > 0 and frame_rate > 0 and math.isfinite(frame_rate)):
        raise ValueError(f"sample_rate and frame_rate must be positive, got {sample_rate} and {frame_rate}")
    mono = _mono(wave)
    frames = frame_count(mono.shape[1], sample_rate, frame_rate)
    analysis = _analysis_chroma(resample(mono, int(sample_rate), ANALYSIS_RATE)[0])  # [J, 12]
    per_frame = ANALYSIS_RATE / (HOP * frame_rate)  # analysis frames per output frame
    edges = np.clip(np.ceil(np.arange(frames + 1) * per_frame - 1e-9).astype(np.int64), 0, len(analysis))
    sums = np.concatenate([np.zeros((1, 12)), np.cumsum(analysis, axis=0)])
    counts = np.diff(edges)
    out = (sums[edges[1:]] - sums[edges[:-1]]) / np.maximum(counts, 1)[:, None]
    empty = counts == 0
    if empty.any():
        nearest = np.clip(np.round((np.flatnonzero(empty) + 0.5) * per_frame).astype(np.int64), 0, len(analysis) - 1)
        out[empty] = analysis[nearest]
    return out.T.astype(np.float32)


def melody_features(wave: np.ndarray, sample_rate: int, frame_rate: float) -> np.ndarray:
    """The melody condition: one-hot dominant pitch class per frame, float32 ``[12, F]``, all zero in silent frames.

    ``wave`` ``[T]`` or ``[C, T]`` at ``sample_rate`` Hz; ``F = ceil(T / sample_rate * frame_rate)``. Deterministic
    (no randomness, no tuning estimate). See the module docstring for the computation and the choice.
    """
    power = chroma(wave, sample_rate, frame_rate)  # [12, F]
    total = power.sum(axis=0)
    voiced = total >= 10.0 ** (SILENCE_DB / 10.0)
    out = np.zeros_like(power)
    frames = np.flatnonzero(voiced)
    out[np.argmax(power[:, frames], axis=0), frames] = 1.0
    return out
