"""Drum voices (analogue-style synthesis) and the kits that give each style its own percussion sound.

A voice renders one hit ``[n]`` float32 of peak about 1. A :class:`Kit` maps voice names used by the style patterns
(``kick``, ``snare``, ``hat``, ``open_hat``, ``crash``, ...) to parameterised voices; the renderer makes each sound once
per track (a few round-robin variants for acoustic kits) and places copies at the hit times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from n2m.synth import dsp
from n2m.synth.dsp import SAMPLE_RATE

Voice = Callable[[np.random.Generator], np.ndarray]

_METAL_HZ = (205.3, 304.4, 369.6, 522.7, 540.0, 800.0)  # the six square oscillators of a TR-808 cymbal


def _n(seconds: float) -> int:
    return int(seconds * SAMPLE_RATE)


def _peak1(y: np.ndarray) -> np.ndarray:
    return (y / max(float(np.max(np.abs(y))), 1e-9)).astype(np.float32)


def kick(rng: np.random.Generator, *, start_hz: float, end_hz: float, sweep_s: float, decay_s: float,
         click: float = 0.2, drive: float = 1.0, tonic: int | None = None) -> np.ndarray:
    """Sine whose pitch falls exponentially from ``start_hz`` to ``end_hz``, with a noise click and saturation.

    With ``tonic`` (pitch class) the drum is retuned so that it settles on the tonic nearest ``end_hz``, as producers
    tune kicks to the key (an untuned kick would colour the key a listener or a chroma model hears).
    """
    if tonic is not None:
        pitch = 69 + 12 * np.log2(end_hz / 440.0)
        tuned = pitch + ((tonic - pitch) + 6) % 12 - 6
        ratio = 2 ** ((tuned - pitch) / 12)
        start_hz, end_hz = start_hz * ratio, end_hz * ratio
    n = _n(decay_s * 5)
    t = dsp.seconds(n)
    freq = end_hz + (start_hz - end_hz) * np.exp(-t / sweep_s)
    body = dsp.sine(dsp.cycles(freq, n)) * np.exp(-t / decay_s)
    body[: _n(0.005)] += click * dsp.noise(rng, _n(0.005))
    return _peak1(dsp.soft_clip(body, drive))


def snare(rng: np.random.Generator, *, tone_hz: float, decay_s: float, highpass_hz: float, tone: float = 0.5,
          lowpass_hz: float = 12000.0) -> np.ndarray:
    """Drum-head tone (two modes) plus band-limited noise for the wires."""
    n = _n(decay_s * 4)
    t = dsp.seconds(n)
    head = (dsp.sine(dsp.cycles(tone_hz, n)) + 0.5 * dsp.sine(dsp.cycles(tone_hz * 1.6, n))) * np.exp(-t / 0.04)
    wires = dsp.filtered(dsp.noise(rng, n), "bandpass", (highpass_hz, lowpass_hz)) * np.exp(-t / decay_s)
    return _peak1(tone * head + wires / max(float(np.std(wires)), 1e-9) * 0.3)


def clap(rng: np.random.Generator, *, decay_s: float = 0.15, centre_hz: float = 1400.0) -> np.ndarray:
    """Three noise bursts 11 ms apart and a tail, band-passed around ``centre_hz``."""
    n = _n(decay_s * 4 + 0.03)
    t = dsp.seconds(n)
    env = np.exp(-np.maximum(t - 0.022, 0) / decay_s) * (t >= 0.022)
    for start in (0.0, 0.011):
        env += np.exp(-(t - start) / 0.004) * ((t >= start) & (t < start + 0.011))
    return _peak1(dsp.filtered(dsp.noise(rng, n), "bandpass", (centre_hz * 0.6, centre_hz * 2.2)) * env)


def metal(rng: np.random.Generator, *, decay_s: float, highpass_hz: float = 7000.0, noise_mix: float = 0.5,
          attack_s: float = 0.0) -> np.ndarray:
    """Hi-hat / ride / crash: six detuned square waves plus noise, high-passed, exponential decay."""
    n = _n(decay_s * 5 + attack_s)
    t = dsp.seconds(n)
    squares = sum(np.sign(dsp.sine(dsp.cycles(hz * 1.7, n) + rng.random())) for hz in _METAL_HZ)
    raw = (1 - noise_mix) * squares / 6.0 + noise_mix * dsp.noise(rng, n) * 0.5
    env = np.exp(-t / decay_s)
    if attack_s > 0:
        env *= np.clip(t / attack_s, 0, 1)
    return _peak1(dsp.filtered(raw.astype(np.float32), "highpass", highpass_hz, order=4) * env)


def shaker(rng: np.random.Generator, *, decay_s: float = 0.06) -> np.ndarray:
    """Band-passed noise with a soft 15 ms attack."""
    n = _n(decay_s * 5 + 0.015)
    t = dsp.seconds(n)
    env = np.clip(t / 0.015, 0, 1) * np.exp(-np.maximum(t - 0.015, 0) / decay_s)
    return _peak1(dsp.filtered(dsp.noise(rng, n), "bandpass", (3500.0, 10000.0)) * env)


def brush(rng: np.random.Generator, *, decay_s: float = 0.12) -> np.ndarray:
    """Brush on a snare: a 30 ms swell of darker noise."""
    n = _n(decay_s * 5 + 0.03)
    t = dsp.seconds(n)
    env = np.clip(t / 0.03, 0, 1) * np.exp(-np.maximum(t - 0.03, 0) / decay_s)
    return _peak1(dsp.filtered(dsp.noise(rng, n), "bandpass", (900.0, 6000.0)) * env)


def rim(rng: np.random.Generator, *, tone_hz: float = 1700.0) -> np.ndarray:
    """Rim click: a short high sine and a click."""
    n = _n(0.08)
    t = dsp.seconds(n)
    y = dsp.sine(dsp.cycles(tone_hz, n)) * np.exp(-t / 0.012)
    y[: _n(0.002)] += dsp.noise(rng, _n(0.002)) * 0.5
    return _peak1(y)


@dataclass(frozen=True)
class Kit:
    """A drum kit: caption phrases and voice name -> voice; ``variants`` round-robin renders per voice."""

    phrases: tuple[str, ...]
    voices: dict[str, Voice] = field(default_factory=dict)
    variants: int = 2
    lowpass_hz: float | None = None  # darkens the whole kit (lo-fi)
    tuned: tuple[str, ...] = ("kick", "tom")  # voices that take ``tonic=`` and are tuned to the track's key


KITS: dict[str, Kit] = {
    "rock": Kit(
        ("punchy rock drums", "live rock drums", "a driving drum kit"),
        {
            "kick": partial(kick, start_hz=120, end_hz=55, sweep_s=0.025, decay_s=0.22, click=0.4, drive=2.0),
            "snare": partial(snare, tone_hz=190, decay_s=0.17, highpass_hz=1200, tone=0.6),
            "hat": partial(metal, decay_s=0.045, noise_mix=0.6),
            "open_hat": partial(metal, decay_s=0.3, noise_mix=0.6),
            "crash": partial(metal, decay_s=0.9, highpass_hz=4000, noise_mix=0.8),
            "tom": partial(kick, start_hz=170, end_hz=110, sweep_s=0.05, decay_s=0.25, click=0.2),
        },
    ),
    "electronic": Kit(
        ("a four-on-the-floor drum machine", "a pumping electronic beat", "a crisp drum machine"),
        {
            "kick": partial(kick, start_hz=150, end_hz=46, sweep_s=0.04, decay_s=0.3, click=0.1, drive=2.5),
            "clap": partial(clap, decay_s=0.14),
            "hat": partial(metal, decay_s=0.03, noise_mix=0.2, highpass_hz=8000),
            "open_hat": partial(metal, decay_s=0.16, noise_mix=0.2, highpass_hz=7000),
            "crash": partial(metal, decay_s=0.8, highpass_hz=5000, noise_mix=0.7),
        },
        variants=1,
    ),
    "funk": Kit(
        ("tight funk drums", "a crisp dry drum kit", "snappy funk drums"),
        {
            "kick": partial(kick, start_hz=100, end_hz=58, sweep_s=0.02, decay_s=0.14, click=0.5, drive=1.5),
            "snare": partial(snare, tone_hz=230, decay_s=0.11, highpass_hz=1800, tone=0.4),
            "hat": partial(metal, decay_s=0.035, noise_mix=0.5, highpass_hz=7500),
            "open_hat": partial(metal, decay_s=0.18, noise_mix=0.5),
            "crash": partial(metal, decay_s=0.7, highpass_hz=4500, noise_mix=0.8),
        },
    ),
    "lofi": Kit(
        ("dusty boom-bap drums", "muffled lo-fi drums", "a lazy dusty beat"),
        {
            "kick": partial(kick, start_hz=85, end_hz=48, sweep_s=0.03, decay_s=0.25, click=0.1, drive=1.2),
            "snare": partial(snare, tone_hz=180, decay_s=0.14, highpass_hz=700, tone=0.5, lowpass_hz=5000),
            "hat": partial(metal, decay_s=0.04, noise_mix=0.7, highpass_hz=5000),
            "open_hat": partial(metal, decay_s=0.2, noise_mix=0.7, highpass_hz=5000),
            "crash": partial(metal, decay_s=0.6, highpass_hz=3500, noise_mix=0.9),
        },
        lowpass_hz=4500.0,
    ),
    "brushes": Kit(
        ("brushed drums", "soft brushes and ride", "gentle brushed percussion"),
        {
            "kick": partial(kick, start_hz=75, end_hz=50, sweep_s=0.03, decay_s=0.2, click=0.05),
            "snare": brush,
            "hat": partial(metal, decay_s=0.35, noise_mix=0.3, highpass_hz=5000),
            "open_hat": partial(metal, decay_s=0.6, noise_mix=0.3, highpass_hz=5000),
            "crash": partial(metal, decay_s=1.2, highpass_hz=3500, noise_mix=0.6, attack_s=0.01),
            "rim": rim,
        },
    ),
    "ambient": Kit(
        ("soft pulsing percussion", "a gentle heartbeat kick and shaker", "sparse soft percussion"),
        {
            "kick": partial(kick, start_hz=65, end_hz=40, sweep_s=0.05, decay_s=0.4, click=0.0),
            "snare": rim,
            "hat": shaker,
            "open_hat": partial(shaker, decay_s=0.15),
            "crash": partial(metal, decay_s=2.0, highpass_hz=3000, noise_mix=0.5, attack_s=0.3),
        },
    ),
    "breakbeat": Kit(
        ("a fast breakbeat", "rolling breakbeat drums", "skittering breakbeat drums"),
        {
            "kick": partial(kick, start_hz=130, end_hz=52, sweep_s=0.02, decay_s=0.15, click=0.5, drive=2.0),
            "snare": partial(snare, tone_hz=240, decay_s=0.14, highpass_hz=1500, tone=0.5),
            "hat": partial(metal, decay_s=0.025, noise_mix=0.5, highpass_hz=8000),
            "open_hat": partial(metal, decay_s=0.3, noise_mix=0.5, highpass_hz=6000),
            "crash": partial(metal, decay_s=0.9, highpass_hz=4000, noise_mix=0.8),
        },
    ),
}
