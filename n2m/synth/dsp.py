"""Vectorised DSP building blocks of the synthesiser: phase, oscillators, envelopes, filters, Karplus-Strong, FM.

Every signal is a mono float32 array ``[n]`` at :data:`SAMPLE_RATE`. Nothing loops over samples in Python: phases are
accumulated with ``cumsum`` in float64 (so long notes stay in tune) and wrapped before the float32 ``sin``; filters run
in scipy's C code; the Karplus-Strong string is solved as one spectral division per note.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy import signal

SAMPLE_RATE = 32_000  # Hz: every corpus file is written at this rate (mono); covers the 24 kHz build rate's band.

_TWO_PI = np.float32(2.0 * np.pi)


def seconds(n: int) -> np.ndarray:
    """Time axis ``[n]`` in seconds (float32)."""
    return np.arange(n, dtype=np.float32) / np.float32(SAMPLE_RATE)


def cycles(freq: float | np.ndarray, n: int) -> np.ndarray:
    """Running phase in cycles ``[n]`` (float64) of a constant or per-sample frequency in Hz, starting at 0."""
    if np.ndim(freq) == 0:
        return np.arange(n, dtype=np.float64) * (float(freq) / SAMPLE_RATE)
    steps = np.asarray(freq, dtype=np.float64) / SAMPLE_RATE
    out = np.cumsum(steps)
    out -= steps[0]
    return out


def sine(phase_cycles: np.ndarray) -> np.ndarray:
    """``sin(2 pi phase)`` ``[n]`` float32; the phase is wrapped to [-1/2, 1/2] in float64 first (float32 sin is fast)."""
    y = (phase_cycles - np.rint(phase_cycles)).astype(np.float32)
    y *= _TWO_PI
    return np.sin(y, out=y)


def vibrato(freq: float, n: int, rate_hz: float, depth: float, delay_s: float = 0.0) -> np.ndarray:
    """Per-sample frequency ``[n]``: ``freq * (1 + depth * sin(2 pi rate t))``, the depth fading in after ``delay_s``."""
    t = seconds(n)
    fade = np.clip((t - delay_s) / 0.3, 0.0, 1.0) if delay_s > 0 else 1.0
    return freq * (1.0 + depth * fade * np.sin(_TWO_PI * rate_hz * t))


def saw(phase_cycles: np.ndarray, step: float | np.ndarray) -> np.ndarray:
    """Band-limited sawtooth ``[n]`` in [-1, 1] by polyBLEP (Valimaki & Huovilainen 2007).

    ``step`` is the phase increment per sample (frequency / sample rate), scalar or ``[n]``.
    """
    p = phase_cycles - np.floor(phase_cycles)
    dt = np.broadcast_to(np.asarray(step, dtype=np.float64), p.shape)
    y = 2.0 * p - 1.0
    lo = p < dt
    t = p[lo] / dt[lo]
    y[lo] -= 2.0 * t - t * t - 1.0
    hi = p > 1.0 - dt
    t = (p[hi] - 1.0) / dt[hi]
    y[hi] -= t * t + 2.0 * t + 1.0
    return y.astype(np.float32)


def noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """White Gaussian noise ``[n]`` float32 with unit variance."""
    return rng.standard_normal(n, dtype=np.float32)


def adsr(n_on: int, n: int, attack_s: float, decay_s: float, sustain: float, release_s: float) -> np.ndarray:
    """Envelope ``[n]``: linear attack, exponential decay to ``sustain``, exponential release from sample ``n_on``."""
    t = seconds(n)
    a = max(attack_s, 1e-4)
    env = np.where(t < a, t / a, sustain + (1.0 - sustain) * np.exp(-(t - a) / max(decay_s, 1e-4)))
    if n_on < n:
        held = env[n_on - 1] if n_on > 0 else 0.0
        env[n_on:] = held * np.exp(-(t[n_on:] - t[n_on]) / max(release_s, 1e-4))
    return env.astype(np.float32, copy=False)


def damp_after(y: np.ndarray, n_on: int, release_s: float) -> np.ndarray:
    """Multiply ``y`` ``[n]`` by an exponential release starting at ``n_on`` (a damper on a ringing string)."""
    if n_on < len(y):
        y[n_on:] *= np.exp(-np.arange(len(y) - n_on, dtype=np.float32) / np.float32(release_s * SAMPLE_RATE))
    return y


def filtered(x: np.ndarray, kind: str, cutoff_hz: float | tuple[float, float], order: int = 2) -> np.ndarray:
    """Butterworth ``lowpass``/``highpass``/``bandpass`` of ``x`` ``[n]`` (second-order sections), float32."""
    nyquist = 0.49 * SAMPLE_RATE
    cut = np.clip(cutoff_hz, 20.0, nyquist)
    sos = signal.butter(order, cut, btype=kind, fs=SAMPLE_RATE, output="sos")
    return signal.sosfilt(sos, x).astype(np.float32)


def resonant_lowpass(x: np.ndarray, cutoff_hz: float, q: float) -> np.ndarray:
    """RBJ cookbook biquad lowpass with resonance ``q`` (0.707 = Butterworth), float32 ``[n]``."""
    w0 = 2.0 * np.pi * min(cutoff_hz, 0.45 * SAMPLE_RATE) / SAMPLE_RATE
    alpha = np.sin(w0) / (2.0 * q)
    cos_w0 = np.cos(w0)
    b = np.array([(1 - cos_w0) / 2, 1 - cos_w0, (1 - cos_w0) / 2])
    a = np.array([1 + alpha, -2 * cos_w0, 1 - alpha])
    return signal.lfilter(b / a[0], a / a[0], x).astype(np.float32)


def one_pole_lowpass(x: np.ndarray, coefficient: float) -> np.ndarray:
    """``y[n] = (1 - c) x[n] + c y[n-1]``: gentle smoothing; ``c`` in [0, 1)."""
    return signal.lfilter([1.0 - coefficient], [1.0, -coefficient], x).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Karplus-Strong string


def _string_constants(freq: float, decay_s: float) -> tuple[int, float, float]:
    """``(L, eta, g)`` of the string loop for pitch ``freq`` and a 60 dB decay of the fundamental in ``decay_s``."""
    period = SAMPLE_RATE / freq
    lag = int(np.floor(period - 0.6))
    if lag < 2:
        raise ValueError(f"pitch {freq:.0f} Hz is too high for a Karplus-Strong string at {SAMPLE_RATE} Hz")
    delta = period - 0.5 - lag  # in [0.1, 1.1): where the first-order allpass is well behaved
    return lag, (1.0 - delta) / (1.0 + delta), 10.0 ** (-3.0 / (decay_s * freq))


def karplus_strong_filter(freq: float, decay_s: float) -> tuple[np.ndarray, np.ndarray]:
    """``(b, a)`` of the plucked-string loop ``y[n] = x[n] + g * A(z) * (y[n-L] + y[n-L-1]) / 2``.

    Karplus & Strong (1983) with Jaffe & Smith's (1983) first-order allpass ``A(z) = (eta + z^-1) / (1 + eta z^-1)`` for
    the fractional part of the period ``sr / freq = L + 1/2 + delta``; ``g`` makes the fundamental fall 60 dB in
    ``decay_s``. Multiplying out: ``B = 1 + eta z^-1``, ``A = 1 + eta z^-1 - g/2 z^-L (eta + (1 + eta) z^-1 + z^-2)``.
    Usable directly with ``scipy.signal.lfilter(b, a, x)``.
    """
    lag, eta, g = _string_constants(freq, decay_s)
    a = np.zeros(lag + 3)
    a[0], a[1] = 1.0, eta
    a[lag:] -= 0.5 * g * np.array([eta, 1.0 + eta, 1.0])
    return np.array([1.0, eta]), a


def karplus_strong(excitation: np.ndarray, freq: float, decay_s: float, n: int) -> np.ndarray:
    """The string's response ``[n]`` to ``excitation``: the same samples as ``lfilter(*karplus_strong_filter(...), x)``.

    Instead of an order-L recursion per sample, ``B(z) / A(z)`` is evaluated on the circle ``|z| = rho > 1``: with
    ``x_rho[k] = x[k] rho^-k``, ``y[k] rho^-k`` is one inverse FFT of ``X_rho B / A`` (the tail that would wrap around is
    weighted by ``rho^-N = 1e-5``), so a note of any pitch costs two real FFTs and two complex exponentials per bin.
    """
    lag, eta, g = _string_constants(freq, decay_s)
    size = sfft.next_fast_len(n, real=True)
    log_rho = np.log(1e5) / size
    ramp = np.exp(-log_rho * np.arange(size))  # rho^-k
    x = np.zeros(size)
    m = min(len(excitation), size)
    x[:m] = excitation[:m]
    spectrum = sfft.rfft(x * ramp)
    log_z_inv = -2j * np.pi * np.arange(len(spectrum)) / size - log_rho  # log of 1 / (rho e^{i omega})
    z1 = np.exp(log_z_inv)
    z_lag = np.exp(lag * log_z_inv)
    numerator = 1.0 + eta * z1
    denominator = numerator - 0.5 * g * z_lag * (eta + (1.0 + eta) * z1 + z1 * z1)
    y = sfft.irfft(spectrum * numerator / denominator, size)[:n]
    return (y / ramp[:n]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# FM


def fm(carrier_hz: float, ratio: float, index: np.ndarray, n: int) -> np.ndarray:
    """Chowning (1973) FM ``[n]``: ``sin(2 pi fc t + I(t) sin(2 pi fc ratio t))`` with a per-sample index ``I`` ``[n]``."""
    modulator = sine(cycles(carrier_hz * ratio, n))
    phase = cycles(carrier_hz, n)
    carrier = (phase - np.rint(phase)).astype(np.float32)
    return np.sin(_TWO_PI * carrier + index * modulator)


def soft_clip(x: np.ndarray, drive: float = 1.0) -> np.ndarray:
    """``tanh(drive x) / tanh(drive)``: saturation that keeps 1 at 1."""
    return (np.tanh(drive * x) / np.tanh(drive)).astype(np.float32)
